# Values for `packer validate` only (CI and test/appliance/packer.test.ts): the checksum and the
# password are placeholders so that validation needs no network and no secret. Never build with it.
debian_iso_checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
vcenter_password    = "validate-only"
