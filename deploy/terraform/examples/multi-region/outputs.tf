output "regions" {
  description = "The regions as registered, by id."
  value       = { for id, region in module.region : id => region.region }
}
