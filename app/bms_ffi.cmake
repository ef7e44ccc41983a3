# SPDX-License-Identifier: Apache-2.0
# Copyright (c) 2026 The OpenBMS authors
#
# Builds the Rust core's C ABI (rust/bms-ffi) with cargo for the board's target and makes it
# the IMPORTED static library `bms_ffi`, with bms.h and bms_port.h on its include path.
# Used by the application and by the Twister suites (include() after find_package(Zephyr)).
#
# Rust target per Zephyr build:
#   Cortex-M4F with the FPU's hard-float ABI (CONFIG_FP_HARDABI)  thumbv7em-none-eabihf
#   Cortex-M4 soft float / softfp                                thumbv7em-none-eabi
#   native_sim/native/64 (CONFIG_ARCH_POSIX, CONFIG_64BIT)        x86_64-unknown-linux-gnu
#   native_sim (32-bit)                                          i686-unknown-linux-gnu

set(BMS_FFI_DIR ${CMAKE_CURRENT_LIST_DIR}/../rust/bms-ffi)
get_filename_component(BMS_FFI_DIR ${BMS_FFI_DIR} ABSOLUTE)

if(CONFIG_ARCH_POSIX)
  if(CONFIG_64BIT)
    set(BMS_RUST_TARGET x86_64-unknown-linux-gnu)
  else()
    set(BMS_RUST_TARGET i686-unknown-linux-gnu)
  endif()
elseif(CONFIG_CPU_CORTEX_M4 AND CONFIG_FP_HARDABI)
  set(BMS_RUST_TARGET thumbv7em-none-eabihf)
elseif(CONFIG_CPU_CORTEX_M4)
  set(BMS_RUST_TARGET thumbv7em-none-eabi)
else()
  message(FATAL_ERROR "bms-ffi: no Rust target known for this board (add one in ${CMAKE_CURRENT_LIST_FILE})")
endif()

set(BMS_CARGO_DIR ${CMAKE_BINARY_DIR}/cargo)
set(BMS_FFI_LIB ${BMS_CARGO_DIR}/${BMS_RUST_TARGET}/release/libbms_ffi.a)
file(GLOB_RECURSE BMS_RUST_SOURCES CONFIGURE_DEPENDS
  ${BMS_FFI_DIR}/../bms-core/src/*.rs
  ${BMS_FFI_DIR}/src/*.rs
)

add_custom_command(
  OUTPUT ${BMS_FFI_LIB}
  COMMAND cargo build --release --locked
          --package bms-ffi
          --target ${BMS_RUST_TARGET}
          --manifest-path ${BMS_FFI_DIR}/Cargo.toml
          --target-dir ${BMS_CARGO_DIR}
  DEPENDS ${BMS_RUST_SOURCES} ${BMS_FFI_DIR}/Cargo.toml ${BMS_FFI_DIR}/../bms-core/Cargo.toml
  WORKING_DIRECTORY ${BMS_FFI_DIR}
  COMMENT "cargo build bms-ffi for ${BMS_RUST_TARGET}"
  USES_TERMINAL
)
add_custom_target(bms_ffi_cargo DEPENDS ${BMS_FFI_LIB})

add_library(bms_ffi STATIC IMPORTED GLOBAL)
set_target_properties(bms_ffi PROPERTIES
  IMPORTED_LOCATION ${BMS_FFI_LIB}
  INTERFACE_INCLUDE_DIRECTORIES ${BMS_FFI_DIR}/include
)
add_dependencies(bms_ffi bms_ffi_cargo)

if(CONFIG_ARCH_POSIX)
  # The linux-gnu staticlib links Rust's std, which needs these host libraries in the final
  # native_sim executable.
  target_link_options(native_simulator INTERFACE -lpthread -ldl -lm)
endif()
