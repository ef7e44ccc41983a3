/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 */

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_main, CONFIG_BMS_LOG_LEVEL);

int main(void)
{
	int err;

	LOG_INF("OpenBMS starting");

	err = storage_init();
	if (err) {
		LOG_ERR("Storage init failed (err %d)", err);
		return err;
	}

	err = io_init();
	if (err) {
		LOG_ERR("I/O init failed (err %d)", err);
		return err;
	}

	err = control_init();
	if (err) {
		LOG_ERR("Control init failed (err %d)", err);
		return err;
	}

	err = bus_init();
	if (err) {
		LOG_ERR("Battery bus init failed (err %d)", err);
		return err;
	}

	/* Opens the core, which hands the stored passkey to ble.c before pairing can start. */
	err = control_start();
	if (err) {
		LOG_ERR("Control start failed (err %d)", err);
		return err;
	}

	err = ble_init();
	if (err) {
		/* The BMS protects the battery without Bluetooth: keep going. */
		LOG_ERR("Bluetooth init failed (err %d)", err);
	}

	if (IS_ENABLED(CONFIG_MCUMGR_GRP_IMG)) {
		err = dfu_init();
		if (err) {
			LOG_ERR("DFU init failed (err %d)", err);
		}
	}

	if (IS_ENABLED(CONFIG_MCUMGR_GRP_IMG)) {
		err = dfu_self_check();
		if (err) {
			LOG_ERR("Self-check failed (err %d)", err);
		}
	}

	return 0;
}
