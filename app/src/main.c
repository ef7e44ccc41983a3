/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Start-up. A part the BMS cannot protect without (storage, terminals, control thread,
 * battery bus) that fails to start reboots the system: every output floats meanwhile, a
 * passing fault gets another chance, and an image on test that cannot start is reverted by
 * MCUboot at that reboot. Returning instead would leave a system with no control thread and
 * so no watchdog to reset it. Bluetooth is not one of those parts: the BMS protects the
 * battery without it (the self-check of an image on test still fails without it).
 */

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/logging/log_ctrl.h>
#include <zephyr/sys/reboot.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_main, CONFIG_BMS_LOG_LEVEL);

/* Long enough for the deferred log to print why, short against the task watchdog. */
#define INIT_FAILURE_REBOOT_DELAY K_MSEC(500)

static FUNC_NORETURN void init_failed(const char *what, int err)
{
	LOG_ERR("%s failed (err %d): rebooting", what, err);
	LOG_PANIC();
	k_sleep(INIT_FAILURE_REBOOT_DELAY);
	sys_reboot(SYS_REBOOT_COLD);
}

int main(void)
{
	int err;

	LOG_INF("OpenBMS starting");
	if (IS_ENABLED(CONFIG_BMS_DEVELOPMENT_KEY)) {
		LOG_WRN("DEVELOPMENT BUILD: signed with the public development key, anybody can "
			"sign an update this board accepts (docs/firmware.md)");
	}

	err = storage_init();
	if (err) {
		init_failed("Storage init", err);
	}

	err = io_init();
	if (err) {
		init_failed("I/O init", err);
	}

	err = control_init();
	if (err) {
		init_failed("Control init", err);
	}

	err = bus_init();
	if (err) {
		init_failed("Battery bus init", err);
	}

	/* Opens the core, which hands the stored passkey to ble.c before pairing can start. */
	err = control_start();
	if (err) {
		init_failed("Control start", err);
	}

	err = ble_init();
	if (err) {
		LOG_ERR("Bluetooth init failed (err %d)", err);
	}

	if (IS_ENABLED(CONFIG_MCUMGR_GRP_IMG)) {
		err = dfu_init();
		if (err) {
			LOG_ERR("DFU init failed (err %d)", err);
		}

		err = dfu_self_check();
		if (err) {
			LOG_ERR("Self-check failed (err %d)", err);
		}
	}

	return 0;
}
