# Rolls out three GPU regions (by default Paris, Tokyo and an Ohio canary) on a running gateway.
#   terraform init && terraform apply    registers them; edit a field and apply to update
#   terraform destroy                    drains each (bounded wait) and removes it

module "region" {
  source   = "../../modules/gateway-region"
  for_each = var.regions

  region_id    = each.key
  name         = each.value.name
  country      = each.value.country
  latitude     = each.value.latitude
  longitude    = each.value.longitude
  base_url     = each.value.base_url
  models       = each.value.models
  attestations = each.value.attestations
  weight       = each.value.weight
  status       = each.value.status

  admin_url       = var.admin_url
  admin_token     = var.admin_token
  gateway_command = var.gateway_command
  drain_timeout   = var.drain_timeout
}
