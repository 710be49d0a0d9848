output "region_id" {
  description = "The registered region id."
  value       = terraform_data.spec.output.id
}

output "region" {
  description = "The region as last sent to the gateway (id, name, country, coordinates, base URL, models, attestations, weight, status)."
  value       = terraform_data.spec.output
}
