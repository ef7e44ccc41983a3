# SPDX-License-Identifier: Apache-2.0
# Copyright (c) 2026 The OpenBMS authors
#
# Release policy of a sysbuild build (sysbuild includes this file before it configures the
# images; the options are in app/Kconfig.sysbuild, the procedure in docs/firmware.md):
#   - a key whose private half is public (keys/bms-ec-p256-dev.pem, MCUboot's sample keys)
#     signs only when SB_CONFIG_BMS_DEVELOPMENT_KEY says so; the build fails otherwise;
#   - a development build says so in the log, in the firmware version string and at boot
#     (CONFIG_BMS_DEVELOPMENT_KEY of the application) and keeps the debug port open;
#   - a release build locks the debug port (APPROTECT) in MCUboot and in the application;
#   - the image carries the security counter MCUboot's downgrade prevention compares.

string(CONFIGURE "${SB_CONFIG_BOOT_SIGNATURE_KEY_FILE}" bms_key_file)
if(NOT IS_ABSOLUTE "${bms_key_file}")
  # MCUboot reads a relative key path (its default, root-ec-p256.pem) from its own directory.
  set(bms_key_file "${ZEPHYR_MCUBOOT_MODULE_DIR}/${bms_key_file}")
endif()
if(NOT EXISTS "${bms_key_file}")
  message(FATAL_ERROR "openbms: signing key ${bms_key_file} (SB_CONFIG_BOOT_SIGNATURE_KEY_FILE) does not exist")
endif()
file(REAL_PATH "${bms_key_file}" bms_key_file)

file(SHA256 "${bms_key_file}" bms_key_sha)
file(SHA256 "${APP_DIR}/../keys/bms-ec-p256-dev.pem" bms_dev_key_sha)
file(REAL_PATH "${ZEPHYR_MCUBOOT_MODULE_DIR}" bms_mcuboot_dir)
string(FIND "${bms_key_file}" "${bms_mcuboot_dir}/" bms_key_in_mcuboot)
if(bms_key_sha STREQUAL bms_dev_key_sha OR bms_key_in_mcuboot EQUAL 0)
  set(bms_public_key TRUE)
else()
  set(bms_public_key FALSE)
endif()

if(bms_public_key AND NOT SB_CONFIG_BMS_DEVELOPMENT_KEY)
  message(FATAL_ERROR
    "openbms: the signing key ${bms_key_file} is public: anybody could sign an image this "
    "board accepts. Release: pass your own key, "
    "-DSB_CONFIG_BOOT_SIGNATURE_KEY_FILE=\\\"/path/to/key.pem\\\" (imgtool keygen -t ecdsa-p256). "
    "Development board: opt in with -DSB_CONFIG_BMS_DEVELOPMENT_KEY=y. docs/firmware.md")
endif()

if(SB_CONFIG_BMS_DEVELOPMENT_KEY)
  message(WARNING
    "openbms: DEVELOPMENT BUILD signed with ${bms_key_file}, a key anybody may have: "
    "for development boards only (the firmware version ends in +dev-key, the debug port "
    "stays open)")
  set_config_bool(${DEFAULT_IMAGE} CONFIG_BMS_DEVELOPMENT_KEY y)
else()
  set_config_bool(${DEFAULT_IMAGE} CONFIG_BMS_DEVELOPMENT_KEY n)
  # Both OpenBMS boards are nRF52840s: the debug port is locked at every start, in the
  # bootloader and in the application (docs/firmware.md, "Debugging a release board").
  if(SB_CONFIG_SOC_SERIES_NRF52X)
    set_config_bool(${DEFAULT_IMAGE} CONFIG_NRF_APPROTECT_LOCK y)
    set_config_bool(mcuboot CONFIG_NRF_APPROTECT_LOCK y)
  endif()
endif()

set_config_string(${DEFAULT_IMAGE} CONFIG_MCUBOOT_EXTRA_IMGTOOL_ARGS
                  "--security-counter ${SB_CONFIG_BMS_SECURITY_COUNTER}")
