# SPDX-License-Identifier: Apache-2.0
# Copyright (c) 2026 The OpenBMS authors
#
# Kconfig that differs between Zephyr releases, chosen once here instead of #if in the code.
# include() it BEFORE find_package(Zephyr): it reads ${ZEPHYR_BASE}/VERSION and appends the
# fragment for that release line to EXTRA_CONF_FILE:
#   zephyr-version/4.2.conf   Zephyr 4.1.99 .. 4.2.x (the release west.yml pins)
#   zephyr-version/4.3.conf   Zephyr 4.3 and newer (symbols renamed or added in 4.3)

if(NOT DEFINED ZEPHYR_BASE AND DEFINED ENV{ZEPHYR_BASE})
  set(ZEPHYR_BASE $ENV{ZEPHYR_BASE})
endif()
if(NOT EXISTS "${ZEPHYR_BASE}/VERSION")
  message(FATAL_ERROR "openbms: ZEPHYR_BASE (${ZEPHYR_BASE}) has no VERSION file; set ZEPHYR_BASE to a Zephyr tree")
endif()
file(STRINGS "${ZEPHYR_BASE}/VERSION" openbms_zephyr_version_lines)
foreach(line ${openbms_zephyr_version_lines})
  if(line MATCHES "^(VERSION_MAJOR|VERSION_MINOR|PATCHLEVEL) *= *([0-9]+)")
    set(openbms_zephyr_${CMAKE_MATCH_1} ${CMAKE_MATCH_2})
  endif()
endforeach()
set(OPENBMS_ZEPHYR_VERSION
    "${openbms_zephyr_VERSION_MAJOR}.${openbms_zephyr_VERSION_MINOR}.${openbms_zephyr_PATCHLEVEL}")

if(OPENBMS_ZEPHYR_VERSION VERSION_LESS 4.1.99)
  message(FATAL_ERROR "openbms: Zephyr ${OPENBMS_ZEPHYR_VERSION} is older than the 4.2 line this firmware is built for")
elseif(OPENBMS_ZEPHYR_VERSION VERSION_LESS 4.2.99)
  set(openbms_zephyr_fragment 4.2.conf)
else()
  set(openbms_zephyr_fragment 4.3.conf)
endif()
list(APPEND EXTRA_CONF_FILE ${CMAKE_CURRENT_LIST_DIR}/zephyr-version/${openbms_zephyr_fragment})
message(STATUS "openbms: Zephyr ${OPENBMS_ZEPHYR_VERSION}, version fragment zephyr-version/${openbms_zephyr_fragment}")
