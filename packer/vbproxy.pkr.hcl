# vbproxy appliance: Debian 13 installed from the netinst ISO with a preseed, provisioned by the
# scripts in appliance/provision/, assembled into an OVA by appliance/ova.sh.
#
#   vsphere-iso.vbproxy  production: built inside vCenter, exported as OVF, repackaged as OVA
#   qemu.vbproxy         local builds (kvm, or tcg where KVM is missing)
#
# Written for Packer 1.6.6 (Debian's package, vsphere and qemu builders built in). With Packer
# 1.10 or later the builders are plugins: see docs/appliance.md ("Packer versions").

locals {
  name         = "vbproxy-${var.vbproxy_version}"
  preseed_path = "preseed.cfg"
  boot_command = [
    "<esc><wait>",
    "auto url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/${local.preseed_path} ",
    "priority=critical locale=en_US.UTF-8 keymap=us ",
    "netcfg/get_hostname=vbproxy netcfg/get_domain=localdomain ",
    "mirror/http/hostname=${var.debian_mirror} ",
    "passwd/user-password=${var.build_password} passwd/user-password-again=${var.build_password} ",
    "<enter>"
  ]
  provision_scripts = [
    "appliance/provision/10-packages.sh",
    "appliance/provision/20-vbproxy.sh",
    "appliance/provision/30-tuning.sh",
    "appliance/provision/40-security.sh",
    "appliance/provision/99-cleanup.sh",
  ]
}

source "qemu" "vbproxy" {
  vm_name          = "${local.name}.raw"
  iso_url          = var.debian_iso_url
  iso_checksum     = var.debian_iso_checksum
  output_directory = "${var.output_dir}/qemu"
  accelerator      = var.qemu_accelerator
  headless         = var.headless
  cpus             = var.cpus
  memory           = var.memory_mib
  disk_size        = "${var.disk_size_mib}M"
  format           = "raw"
  disk_interface   = "virtio-scsi"
  net_device       = "virtio-net"
  http_directory   = "packer/http"
  boot_wait        = "5s"
  boot_command     = local.boot_command
  communicator     = "ssh"
  ssh_username     = "vbbuild"
  ssh_password     = var.build_password
  ssh_timeout      = "90m"
  shutdown_command = "echo '${var.build_password}' | sudo -S systemctl poweroff"
}

source "vsphere-iso" "vbproxy" {
  vcenter_server       = var.vcenter_server
  username             = var.vcenter_username
  password             = var.vcenter_password
  insecure_connection  = var.vcenter_insecure
  datacenter           = var.vsphere_datacenter
  cluster              = var.vsphere_cluster
  datastore            = var.vsphere_datastore
  folder               = var.vsphere_folder
  vm_name              = local.name
  guest_os_type        = "debian12_64Guest"
  firmware             = "bios"
  CPUs                 = var.cpus
  RAM                  = var.memory_mib
  disk_controller_type = ["pvscsi"]
  storage {
    disk_size             = var.disk_size_mib
    disk_thin_provisioned = true
  }
  network_adapters {
    network      = var.vsphere_network
    network_card = "vmxnet3"
  }
  configuration_parameters = {
    "disk.EnableUUID" = "TRUE"
  }
  iso_paths        = var.vsphere_iso_paths
  iso_url          = length(var.vsphere_iso_paths) == 0 ? var.debian_iso_url : null
  iso_checksum     = length(var.vsphere_iso_paths) == 0 ? var.debian_iso_checksum : null
  http_directory   = "packer/http"
  boot_wait        = "5s"
  boot_command     = local.boot_command
  communicator     = "ssh"
  ssh_username     = "vbbuild"
  ssh_password     = var.build_password
  ssh_timeout      = "90m"
  shutdown_command = "echo '${var.build_password}' | sudo -S systemctl poweroff"
  export {
    output_directory = "${var.output_dir}/vsphere"
    force            = true
    manifest         = "none"
  }
}

build {
  sources = ["source.qemu.vbproxy", "source.vsphere-iso.vbproxy"]

  # Everything the provisioning scripts need, in one directory on the guest.
  provisioner "shell" {
    inline = ["mkdir -p /tmp/vbproxy-provision/docs"]
  }
  provisioner "file" {
    source      = "docs/appliance.md"
    destination = "/tmp/vbproxy-provision/docs/appliance.md"
  }
  provisioner "file" {
    source      = var.vbproxy_tarball
    destination = "/tmp/vbproxy-provision/vbproxy.tgz"
  }
  provisioner "file" {
    source      = "appliance/files"
    destination = "/tmp/vbproxy-provision"
  }
  provisioner "file" {
    source      = "systemd"
    destination = "/tmp/vbproxy-provision"
  }
  provisioner "shell" {
    execute_command  = "echo '${var.build_password}' | sudo -S env {{ .Vars }} bash '{{ .Path }}'"
    environment_vars = ["VBPROXY_PROVISION_DIR=/tmp/vbproxy-provision", "DEBIAN_FRONTEND=noninteractive"]
    scripts          = local.provision_scripts
  }

  post-processor "shell-local" {
    only   = ["qemu.vbproxy"]
    inline = ["bash appliance/ova.sh --disk ${var.output_dir}/qemu/${local.name}.raw --out ${var.output_dir}/${local.name}.ova --version ${var.vbproxy_version} --cpus ${var.cpus} --memory-mib ${var.memory_mib} --firmware bios"]
  }
  post-processor "shell-local" {
    only   = ["vsphere-iso.vbproxy"]
    inline = ["bash appliance/ova.sh --disk ${var.output_dir}/vsphere/${local.name}-disk-0.vmdk --out ${var.output_dir}/${local.name}.ova --version ${var.vbproxy_version} --cpus ${var.cpus} --memory-mib ${var.memory_mib} --firmware bios"]
  }
}
