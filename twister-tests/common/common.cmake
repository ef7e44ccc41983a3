# SPDX-License-Identifier: Apache-2.0
# Copyright (c) 2026 The OpenBMS authors
#
# Shared set-up of the OpenBMS Twister suites. include() it BEFORE find_package(Zephyr):
# it points the build at the application's Kconfig menu, the board overlays of the repository
# (native_sim: GPIO, ADC and UART emulators, flash simulator) and the common Kconfig fragment.
# After find_package(Zephyr), call openbms_test_sources(<app files...>).

set(OPENBMS_ROOT ${CMAKE_CURRENT_LIST_DIR}/../..)
get_filename_component(OPENBMS_ROOT ${OPENBMS_ROOT} ABSOLUTE)

set(KCONFIG_ROOT ${OPENBMS_ROOT}/app/Kconfig)
set(DTC_OVERLAY_FILE ${OPENBMS_ROOT}/boards/native_sim.overlay)
list(APPEND EXTRA_CONF_FILE ${CMAKE_CURRENT_LIST_DIR}/common.conf)
include(${OPENBMS_ROOT}/app/zephyr_version.cmake)

# The real application files under test, the shared test support, and the Rust core.
function(openbms_test_sources)
  foreach(file ${ARGN})
    target_sources(app PRIVATE ${OPENBMS_ROOT}/app/src/${file})
  endforeach()
  target_sources(app PRIVATE ${OPENBMS_ROOT}/twister-tests/common/src/support.c)
  # support_start_firmware() calls the control loop's start-up: only with control.c.
  if("control.c" IN_LIST ARGN)
    target_sources(app PRIVATE ${OPENBMS_ROOT}/twister-tests/common/src/start.c)
  endif()
  target_include_directories(app PRIVATE
    ${OPENBMS_ROOT}/app/src
    ${OPENBMS_ROOT}/twister-tests/common/src
  )
  include(${OPENBMS_ROOT}/app/bms_ffi.cmake)
  target_link_libraries(app PRIVATE bms_ffi)
endfunction()
