# One gateway region, managed through the `gateway regions` CLI.
#
# Two built-in terraform_data resources split the lifecycle, because provisioners run only on
# create and destroy, never on update:
#   registration - lives as long as the region id: its destroy provisioners drain the region,
#                  wait (bounded) for in-flight work, then delete it.
#   spec         - replaced whenever any region field changes: its create provisioner runs the
#                  idempotent `gateway regions put`, so a change updates the region in place
#                  (no drain, no gap in service).
# Destroy provisioners may only reference `self`, so everything they need travels in
# registration.input.

locals {
  spec = {
    id           = var.region_id
    name         = var.name
    country      = var.country
    latitude     = var.latitude
    longitude    = var.longitude
    base_url     = var.base_url
    models       = var.models
    attestations = var.attestations
    weight       = var.weight
    status       = var.status
  }

  # Flags of `gateway regions put`; the region id goes last, as the provisioner's `command`,
  # so no shell ever parses a value.
  put_args = concat(
    [
      "regions", "put",
      "--name", var.name,
      "--country", var.country,
      "--latitude", tostring(var.latitude),
      "--longitude", tostring(var.longitude),
      "--base-url", var.base_url,
      "--models", join(",", var.models),
      "--weight", tostring(var.weight),
      "--status", var.status,
    ],
    length(var.attestations) > 0 ? ["--attestations", join(",", var.attestations)] : [],
  )

  # Whether a token is set is not secret; the token itself stays marked sensitive.
  has_token = nonsensitive(var.admin_token != null)
}

resource "terraform_data" "registration" {
  triggers_replace = [var.region_id]

  input = {
    region_id       = var.region_id
    admin_url       = var.admin_url
    admin_token     = var.admin_token
    has_token       = local.has_token
    gateway_command = var.gateway_command
    drain_timeout   = var.drain_timeout
  }

  # Stop new requests and wait for in-flight ones. A drain that runs out of time (exit 3)
  # still lets the region be removed below: the wait is bounded by design. Any other failure
  # (gateway unreachable, token refused) makes the delete fail too, with its own message.
  # --missing-ok: a region already removed outside Terraform destroys cleanly.
  provisioner "local-exec" {
    when        = destroy
    interpreter = concat(self.input.gateway_command, ["regions", "drain", "--missing-ok", "--wait", tostring(self.input.drain_timeout)])
    command     = self.input.region_id
    on_failure  = continue
    # nonsensitive: local-exec never prints its environment, and a sensitive value anywhere in
    # the block would hide the CLI's error messages too.
    environment = merge(
      { GATEWAY_ADMIN_URL = self.input.admin_url },
      self.input.has_token ? { GATEWAY_ADMIN_TOKEN = nonsensitive(self.input.admin_token) } : {},
    )
  }

  provisioner "local-exec" {
    when        = destroy
    interpreter = concat(self.input.gateway_command, ["regions", "delete", "--missing-ok"])
    command     = self.input.region_id
    environment = merge(
      { GATEWAY_ADMIN_URL = self.input.admin_url },
      self.input.has_token ? { GATEWAY_ADMIN_TOKEN = nonsensitive(self.input.admin_token) } : {},
    )
  }
}

resource "terraform_data" "spec" {
  # A new registration (new region id) or any changed field means a new `put`.
  triggers_replace = [terraform_data.registration.id, local.spec]

  input = local.spec

  provisioner "local-exec" {
    interpreter = concat(var.gateway_command, local.put_args)
    command     = var.region_id
    environment = merge(
      { GATEWAY_ADMIN_URL = var.admin_url },
      local.has_token ? { GATEWAY_ADMIN_TOKEN = nonsensitive(var.admin_token) } : {},
    )
  }
}
