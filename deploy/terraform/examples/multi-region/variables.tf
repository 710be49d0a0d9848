variable "admin_url" {
  description = "Base URL of the gateway admin API (any replica)."
  type        = string
}

variable "admin_token" {
  description = "Operator token (role admin or operator); null to use GATEWAY_ADMIN_TOKEN from the environment (keeps it out of the state)."
  type        = string
  default     = null
  sensitive   = true
}

variable "gateway_command" {
  description = "The gateway CLI as an argument list."
  type        = list(string)
  default     = ["gateway"]
}

variable "drain_timeout" {
  description = "Seconds destroy waits for in-flight work per region."
  type        = number
  default     = 60
}

variable "regions" {
  description = "Regions to roll out, by region id."
  type = map(object({
    name         = string
    country      = string
    latitude     = number
    longitude    = number
    base_url     = string
    models       = list(string)
    attestations = optional(list(string), [])
    weight       = optional(number, 100)
    status       = optional(string, "active")
  }))

  default = {
    "eu-paris" = {
      name      = "Paris (FR)"
      country   = "FR"
      latitude  = 48.86
      longitude = 2.35
      base_url  = "https://gpu.eu-paris.example.com"
      models    = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    }
    "ap-tokyo" = {
      name      = "Tokyo (JP)"
      country   = "JP"
      latitude  = 35.68
      longitude = 139.69
      base_url  = "https://gpu.ap-tokyo.example.com"
      models    = ["gpt-4o-mini", "gpt-4o"]
    }
    "us-ohio" = {
      name         = "Ohio (US)"
      country      = "US"
      latitude     = 40.0
      longitude    = -83.0
      base_url     = "https://gpu.us-ohio.example.com"
      models       = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
      attestations = ["eu_us_dpf", "uk_extension_dpf", "swiss_us_dpf"]
      weight       = 10 # canary next to the existing US regions
    }
  }
}
