# SPDX-License-Identifier: Apache-2.0
# Copyright (c) 2026 The OpenBMS authors
#
# Builds the Rust core's C ABI (rust/bms-ffi) with cargo for the board's target and makes it
# the IMPORTED static library `bms_ffi`, with bms.h and bms_port.h on its include path.
# Used by the application and by the Twister suites (include() after find_package(Zephyr)).
#
# Rust target per Zephyr build (the float ABI must match Zephyr's -mfloat-abi):
#   Cortex-M4F with CONFIG_FPU and CONFIG_FP_HARDABI (-mfloat-abi=hard)  thumbv7em-none-eabihf
#   native_sim/native/64 (CONFIG_ARCH_POSIX, CONFIG_64BIT)               x86_64-unknown-linux-gnu
#   native_sim (32-bit)                                                  i686-unknown-linux-gnu
# A Cortex-M4 build without the FPU is refused: the core's f32 maths would run in software
# routines, and the sizes and stacks in docs/ffi.md (measured hard-float) would not hold.
#
# Toolchain, as scripts/target-build chooses it: rustup's cargo when rustup has the target
# installed (`rustup target add <target>`); otherwise, for the bare-metal targets, Debian's
# rustc-web/cargo-web with rust-web-src, which builds core from source (-Zbuild-std, with
# -Cpanic=immediate-abort). cargo runs in rust/bms-ffi so that its .cargo/config.toml applies. BMS_TARGET_TOOLCHAIN=debian (environment or -D) forces the Debian
# route; BMS_DEBIAN_CARGO and BMS_DEBIAN_RUSTC name its programs.

set(BMS_FFI_DIR ${CMAKE_CURRENT_LIST_DIR}/../rust/bms-ffi)
get_filename_component(BMS_FFI_DIR ${BMS_FFI_DIR} ABSOLUTE)

if(CONFIG_ARCH_POSIX)
  if(CONFIG_64BIT)
    set(BMS_RUST_TARGET x86_64-unknown-linux-gnu)
  else()
    set(BMS_RUST_TARGET i686-unknown-linux-gnu)
  endif()
elseif(CONFIG_CPU_CORTEX_M4 AND CONFIG_FPU AND CONFIG_FP_HARDABI)
  set(BMS_RUST_TARGET thumbv7em-none-eabihf)
elseif(CONFIG_CPU_CORTEX_M4)
  message(FATAL_ERROR "bms-ffi: set CONFIG_FPU=y and CONFIG_FP_HARDABI=y for this Cortex-M4F board "
                      "(the Rust core is built for thumbv7em-none-eabihf only)")
else()
  message(FATAL_ERROR "bms-ffi: no Rust target known for this board (add one in ${CMAKE_CURRENT_LIST_FILE})")
endif()

if(NOT DEFINED BMS_TARGET_TOOLCHAIN AND DEFINED ENV{BMS_TARGET_TOOLCHAIN})
  set(BMS_TARGET_TOOLCHAIN $ENV{BMS_TARGET_TOOLCHAIN})
endif()
set(BMS_DEBIAN_CARGO /usr/bin/cargo CACHE FILEPATH "cargo of Debian's cargo-web (build-std route)")
set(BMS_DEBIAN_RUSTC /usr/bin/rustc CACHE FILEPATH "rustc of Debian's rustc-web (build-std route)")

set(bms_rustup_has_target FALSE)
find_program(BMS_RUSTUP rustup)
if(BMS_RUSTUP AND NOT BMS_TARGET_TOOLCHAIN STREQUAL "debian")
  execute_process(
    COMMAND ${BMS_RUSTUP} target list --installed
    OUTPUT_VARIABLE bms_rustup_targets
    ERROR_QUIET
    RESULT_VARIABLE bms_rustup_result
  )
  if(bms_rustup_result EQUAL 0)
    string(REPLACE "\n" ";" bms_rustup_targets "${bms_rustup_targets}")
    if(BMS_RUST_TARGET IN_LIST bms_rustup_targets)
      set(bms_rustup_has_target TRUE)
    endif()
  endif()
endif()

# cargo's target directory: per build by default; BMS_CARGO_TARGET_DIR (environment or -D)
# shares one between builds for the same Rust target (scripts/twister does, for its suites).
if(NOT DEFINED BMS_CARGO_TARGET_DIR AND DEFINED ENV{BMS_CARGO_TARGET_DIR})
  set(BMS_CARGO_TARGET_DIR $ENV{BMS_CARGO_TARGET_DIR})
endif()
if(BMS_CARGO_TARGET_DIR)
  set(BMS_CARGO_DIR ${BMS_CARGO_TARGET_DIR})
else()
  set(BMS_CARGO_DIR ${CMAKE_BINARY_DIR}/cargo)
endif()
set(BMS_FFI_LIB ${BMS_CARGO_DIR}/${BMS_RUST_TARGET}/firmware/libbms_ffi.a)
# `rustc --crate-type staticlib`: the static library alone, so that cargo applies LTO.
set(bms_cargo_args
  rustc --profile firmware --locked
  --package bms-ffi --lib --crate-type staticlib
  --target ${BMS_RUST_TARGET}
  --manifest-path ${BMS_FFI_DIR}/Cargo.toml
  --target-dir ${BMS_CARGO_DIR}
)

if(bms_rustup_has_target)
  find_program(BMS_CARGO cargo REQUIRED)
  set(bms_cargo_command ${BMS_CARGO} ${bms_cargo_args})
  set(bms_toolchain "rustup")
elseif(BMS_RUST_TARGET MATCHES "^thumb")
  # No rustup target: core and compiler_builtins built from rust-web-src, the way
  # scripts/target-build does it (docs/ffi.md, "Building the library for a board").
  if(NOT EXISTS ${BMS_DEBIAN_CARGO} OR NOT EXISTS ${BMS_DEBIAN_RUSTC})
    message(FATAL_ERROR
      "bms-ffi: no Rust toolchain for ${BMS_RUST_TARGET}: run `rustup target add ${BMS_RUST_TARGET}`, "
      "or install Debian's rustc-web cargo-web rust-web-src (scripts/target-build does)")
  endif()
  # The panic flags go in as --config so that they add to rust/bms-ffi/.cargo/config.toml's
  # target rustflags (RUSTFLAGS would replace them).
  set(bms_cargo_command
    ${CMAKE_COMMAND} -E env
      RUSTC=${BMS_DEBIAN_RUSTC}
      RUSTC_BOOTSTRAP=1
    ${BMS_DEBIAN_CARGO} ${bms_cargo_args}
      -Zbuild-std=core,compiler_builtins
      -Zbuild-std-features=compiler-builtins-mem
      --config "target.${BMS_RUST_TARGET}.rustflags=[\"-Zunstable-options\", \"-Cpanic=immediate-abort\", \"-Zlocation-detail=none\", \"-Zfmt-debug=none\"]"
  )
  set(bms_toolchain "Debian build-std")
else()
  # The host targets need the target's std, which only rustup provides (the host's own
  # target is always installed).
  message(FATAL_ERROR "bms-ffi: `rustup target add ${BMS_RUST_TARGET}` is needed for this board")
endif()
message(STATUS "bms-ffi: ${BMS_RUST_TARGET} with the ${bms_toolchain} toolchain")

file(GLOB_RECURSE BMS_RUST_SOURCES CONFIGURE_DEPENDS
  ${BMS_FFI_DIR}/../bms-core/src/*.rs
  ${BMS_FFI_DIR}/src/*.rs
)

add_custom_command(
  OUTPUT ${BMS_FFI_LIB}
  COMMAND ${bms_cargo_command}
  DEPENDS ${BMS_RUST_SOURCES} ${BMS_FFI_DIR}/Cargo.toml ${BMS_FFI_DIR}/../bms-core/Cargo.toml
          ${BMS_FFI_DIR}/../../Cargo.toml ${BMS_FFI_DIR}/../../Cargo.lock
  WORKING_DIRECTORY ${BMS_FFI_DIR}
  COMMENT "cargo build bms-ffi for ${BMS_RUST_TARGET} (${bms_toolchain})"
  USES_TERMINAL
  VERBATIM
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
