# Versions and sizes of the vbproxy appliance build. Override with -var or a .pkrvars.hcl file.

variable "vbproxy_version" {
  type        = string
  description = "Version stamped into the OVF descriptor (package.json version)."
  default     = "0.1.0"
}

variable "vbproxy_tarball" {
  type        = string
  description = "The vbproxy package built by `npm pack`."
  default     = "/var/tmp/vbproxy-appliance/vbproxy.tgz"
}

variable "debian_iso_url" {
  type        = string
  description = "Debian 13 (trixie) netinst ISO: a URL, or a path on the build host."
  default     = "https://cdimage.debian.org/cdimage/release/current/amd64/iso-cd/debian-13.2.0-amd64-netinst.iso"
}

# No default: give the checksum of the ISO you build from, "sha256:<hex>", or
# "file:https://cdimage.debian.org/cdimage/release/current/amd64/iso-cd/SHA256SUMS".
variable "debian_iso_checksum" {
  type        = string
  description = "Checksum of the Debian ISO (sha256:<hex> or file:<SHA256SUMS URL>)."
}

variable "debian_mirror" {
  type        = string
  description = "Debian mirror host the installer uses."
  default     = "deb.debian.org"
}

variable "cpus" {
  type    = number
  default = 2
}

variable "memory_mib" {
  type    = number
  default = 4096
}

variable "disk_size_mib" {
  type        = number
  description = "System disk size. Backups go to the repository (NFS/SMB/S3), not to this disk."
  default     = 16384
}

variable "output_dir" {
  type    = string
  default = "/var/tmp/vbproxy-appliance/packer"
}

# Build-time account only: 99-cleanup.sh deletes it before the image is sealed.
variable "build_password" {
  type      = string
  default   = "vbproxy-build"
  sensitive = true
}

# qemu source
variable "qemu_accelerator" {
  type        = string
  description = "kvm where /dev/kvm works, tcg otherwise (slow)."
  default     = "kvm"
}

variable "headless" {
  type    = bool
  default = true
}

# vsphere-iso source
variable "vcenter_server" {
  type    = string
  default = "vcenter.example.com"
}

variable "vcenter_username" {
  type    = string
  default = "packer@vsphere.local"
}

# No default: pass it with -var or PKR_VAR_vcenter_password, never in a committed file.
variable "vcenter_password" {
  type      = string
  sensitive = true
}

variable "vcenter_insecure" {
  type    = bool
  default = false
}

variable "vsphere_datacenter" {
  type    = string
  default = "dc1"
}

variable "vsphere_cluster" {
  type    = string
  default = "cluster1"
}

variable "vsphere_datastore" {
  type    = string
  default = "datastore1"
}

variable "vsphere_network" {
  type    = string
  default = "VM Network"
}

variable "vsphere_folder" {
  type    = string
  default = "templates"
}

variable "vsphere_iso_paths" {
  type        = list(string)
  description = "The Debian ISO already on a datastore, e.g. [\"[datastore1] iso/debian-13.2.0-amd64-netinst.iso\"]; empty: upload debian_iso_url."
  default     = []
}
