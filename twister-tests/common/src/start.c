/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The firmware's start-up for the suites that run the control loop (built with control.c:
 * common.cmake adds this file only then).
 */

#include <zephyr/ztest.h>

#include "app.h"
#include "support.h"

void support_start_firmware(bool feeder)
{
	/* The order of app/src/main.c, without Bluetooth and DFU (faked or absent here). */
	zassert_ok(storage_init());
	zassert_ok(io_init());
	zassert_ok(control_init());
	zassert_ok(bus_init());
	zassert_ok(control_start());
	if (feeder) {
		support_feeder_start();
	}
}
