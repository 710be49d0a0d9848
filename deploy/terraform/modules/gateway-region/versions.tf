terraform {
  # terraform_data (built into Terraform itself, no provider download) arrived in 1.4.
  required_version = ">= 1.4"
}
