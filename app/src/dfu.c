/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Firmware update (DFU-1, DFU-2). MCUmgr's image group receives the image over SMP into
 * MCUboot's secondary slot (see prj.conf and sysbuild.conf); its status hooks tell the core
 * when an upload starts, completes or stops, and the core floats ATC meanwhile and decides
 * what a failed update means for ATD (PROT-10). After an update the new image runs in test
 * mode: it confirms itself only once the core's self-check passed, and reboots when the core
 * says it failed, so that MCUboot reverts to the previous image. The criteria and time limits
 * are the core's (Bms::self_check, limits.rs); this file only applies the verdict. Hook
 * pattern of doc/services/device_mgmt/mcumgr_callbacks.rst.
 */

#include <zephyr/dfu/mcuboot.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/mgmt/mcumgr/mgmt/callbacks.h>
#include <zephyr/sys/reboot.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_dfu, CONFIG_BMS_LOG_LEVEL);

static enum mgmt_cb_return img_status(uint32_t event, enum mgmt_cb_return prev_status,
				      int32_t *rc, uint16_t *group, bool *abort_more, void *data,
				      size_t data_size)
{
	ARG_UNUSED(prev_status);
	ARG_UNUSED(rc);
	ARG_UNUSED(group);
	ARG_UNUSED(abort_more);
	ARG_UNUSED(data);
	ARG_UNUSED(data_size);

	switch (event) {
	case MGMT_EVT_OP_IMG_MGMT_DFU_STARTED:
		LOG_INF("Update started");
		(void)control_post_dfu(BMS_DFU_STARTED);
		break;
	case MGMT_EVT_OP_IMG_MGMT_DFU_PENDING:
		LOG_INF("Update received, pending reboot");
		(void)control_post_dfu(BMS_DFU_COMPLETED);
		break;
	case MGMT_EVT_OP_IMG_MGMT_DFU_STOPPED:
		LOG_WRN("Update stopped before completion");
		(void)control_post_dfu(BMS_DFU_ABORTED);
		break;
	default:
		break;
	}

	return MGMT_CB_OK;
}

static struct mgmt_callback img_status_cb = {
	.callback = img_status,
	.event_id = MGMT_EVT_OP_IMG_MGMT_DFU_STARTED | MGMT_EVT_OP_IMG_MGMT_DFU_PENDING |
		    MGMT_EVT_OP_IMG_MGMT_DFU_STOPPED,
};

int dfu_init(void)
{
	mgmt_callback_register(&img_status_cb);

	return 0;
}

int dfu_self_check(void)
{
	int verdict;
	int err;

	if (!IS_ENABLED(CONFIG_BOOTLOADER_MCUBOOT) || boot_is_img_confirmed()) {
		return 0;
	}

	LOG_INF("Image in test mode: self-check");

	/* The core decides (DFU-1, bms_self_check): the control thread asks it after every step,
	 * with Bluetooth and storage state, and gives a semaphore once the verdict is made:
	 * 1 passed, negative failed. A control thread that stops stepping is reset by the task
	 * watchdog, and MCUboot reverts the unconfirmed image at that reboot too.
	 */
	verdict = control_self_check_wait(K_FOREVER);

	if (verdict < 0) {
		LOG_ERR("Self-check failed (err %d): rebooting to revert", verdict);
		sys_reboot(SYS_REBOOT_COLD);
	}

	err = boot_write_img_confirmed();
	if (err) {
		LOG_ERR("Image not confirmed (err %d)", err);
		return err;
	}

	LOG_INF("Self-check passed, image confirmed");
	return 0;
}
