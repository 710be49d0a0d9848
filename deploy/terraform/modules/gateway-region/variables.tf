# -- the region ---------------------------------------------------------------------------

variable "region_id" {
  description = "Region id the gateway routes to and records (lowercase letters, digits, hyphens). Changing it removes the old region and registers a new one."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$", var.region_id))
    error_message = "region_id: must be 1-64 lowercase letters, digits or hyphens, starting and ending with a letter or digit (e.g. \"eu-paris\")."
  }
}

variable "name" {
  description = "Human-readable region name."
  type        = string

  validation {
    condition     = length(trimspace(var.name)) > 0
    error_message = "name: must not be empty."
  }
}

variable "country" {
  description = "ISO 3166-1 alpha-2 code of the country the GPUs are in (e.g. \"FR\")."
  type        = string

  validation {
    condition     = can(regex("^[A-Z]{2}$", var.country))
    error_message = "country: must be an ISO 3166-1 alpha-2 code in upper case, such as \"FR\" or \"JP\"."
  }
}

variable "latitude" {
  description = "Latitude of the region in degrees (-90 to 90)."
  type        = number

  validation {
    condition     = var.latitude >= -90 && var.latitude <= 90
    error_message = "latitude: must be between -90 and 90 degrees."
  }
}

variable "longitude" {
  description = "Longitude of the region in degrees (-180 to 180)."
  type        = number

  validation {
    condition     = var.longitude >= -180 && var.longitude <= 180
    error_message = "longitude: must be between -180 and 180 degrees."
  }
}

variable "base_url" {
  description = "OpenAI-compatible endpoint of the region, without /v1 (http or https)."
  type        = string

  validation {
    condition     = can(regex("^https?://[^/?#\\s]+", var.base_url))
    error_message = "base_url: must be an http:// or https:// URL with a host, such as \"https://gpu.eu-paris.example.com\"."
  }
}

variable "models" {
  description = "Model names the region serves (at least one)."
  type        = list(string)

  validation {
    condition     = length(var.models) > 0
    error_message = "models: list at least one model."
  }

  validation {
    condition     = alltrue([for m in var.models : can(regex("^[^,\\s]+$", m))])
    error_message = "models: names must be non-empty and contain no commas or spaces."
  }
}

variable "attestations" {
  description = "Transfer attestations the region holds (e.g. \"eu_us_dpf\"); the gateway rejects unknown ones."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.attestations : can(regex("^[a-z0-9_]+$", a))])
    error_message = "attestations: each must be lowercase letters, digits and underscores, such as \"eu_us_dpf\"."
  }
}

variable "weight" {
  description = "Share of traffic among equally near regions, 0-100 (canary rollout)."
  type        = number
  default     = 100

  validation {
    condition     = var.weight >= 0 && var.weight <= 100 && floor(var.weight) == var.weight
    error_message = "weight: must be a whole number from 0 to 100."
  }
}

variable "status" {
  description = "active (takes new requests), draining (finishes in-flight work, takes none) or disabled."
  type        = string
  default     = "active"

  validation {
    condition     = contains(["active", "draining", "disabled"], var.status)
    error_message = "status: must be one of active, draining, disabled."
  }
}

# -- the gateway to register with ---------------------------------------------------------

variable "admin_url" {
  description = "Base URL of the gateway admin API (any replica; they share one database)."
  type        = string

  validation {
    condition     = can(regex("^https?://[^/?#\\s]+", var.admin_url))
    error_message = "admin_url: must be an http:// or https:// URL with a host, such as \"https://gateway.example.com\"."
  }
}

variable "admin_token" {
  description = "Operator token (role admin or operator). Kept in the Terraform state for destroy; leave null to use GATEWAY_ADMIN_TOKEN from Terraform's own environment instead."
  type        = string
  default     = null
  sensitive   = true
}

variable "gateway_command" {
  description = "The gateway CLI as an argument list, e.g. [\"gateway\"] or [\"/opt/gw/bin/gateway\"]."
  type        = list(string)
  default     = ["gateway"]

  validation {
    condition     = length(var.gateway_command) > 0 && alltrue([for a in var.gateway_command : length(a) > 0])
    error_message = "gateway_command: give the program (and any fixed arguments) as a non-empty list of non-empty strings."
  }
}

variable "drain_timeout" {
  description = "Seconds destroy waits for in-flight requests and streams to finish before removing the region."
  type        = number
  default     = 60

  validation {
    condition     = var.drain_timeout >= 0 && var.drain_timeout <= 3600 && floor(var.drain_timeout) == var.drain_timeout
    error_message = "drain_timeout: must be a whole number of seconds from 0 to 3600."
  }
}
