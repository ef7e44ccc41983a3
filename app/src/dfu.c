/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Firmware update (DFU-1, DFU-2). MCUmgr's image group receives the image over SMP into
 * MCUboot's secondary slot (see prj.conf and app/sysbuild*), erasing it sector by sector as
 * the data arrives (CONFIG_IMG_ERASE_PROGRESSIVELY), so no long erase stalls flash writes of
 * the control thread. Hooks of doc/services/device_mgmt/mcumgr_callbacks.rst:
 *
 * - upload check: the first chunk must be an MCUboot image no older than the running one
 *   that fits the slot (dfu_check.c); MCUboot checks signature and security counter again;
 * - command check: no image-state write while the running image is in test mode, so that a
 *   phone cannot confirm it: only the self-check below does; nor while the secondary slot
 *   holds an image older than the running one (a "test" of it would be a downgrade);
 * - status: the core hears when an upload starts, completes or stops and floats ATC meanwhile
 *   (PROT-10); a dropped link stops the upload for the core too (img_mgmt itself waits for
 *   the client), and a client that resumes it later starts it again. Which link carries the
 *   upload is Bluetooth's business: dfu_link.c, built with CONFIG_BT, calls
 *   dfu_upload_link_lost(); the hooks here need no Bluetooth (twister-tests/dfu_smp runs them
 *   on native_sim through MCUmgr's dummy SMP transport).
 *
 * After an update the new image runs in test mode: it confirms itself only once the core's
 * self-check passed, and reboots when the core says it failed, so that MCUboot reverts to the
 * previous image. The criteria and time limits are the core's (Bms::self_check, limits.rs).
 */

#include <zephyr/dfu/mcuboot.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/mgmt/mcumgr/grp/img_mgmt/img_mgmt.h>
#include <zephyr/mgmt/mcumgr/mgmt/callbacks.h>
#include <zephyr/mgmt/mcumgr/mgmt/mgmt.h>
#include <zephyr/storage/flash_map.h>
#include <zephyr/sys/reboot.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_dfu, CONFIG_BMS_LOG_LEVEL);

#define RUNNING_SLOT FIXED_PARTITION_ID(slot0_partition)
#define UPDATE_SLOT FIXED_PARTITION_ID(slot1_partition)
#define UPDATE_SLOT_SIZE FIXED_PARTITION_SIZE(slot1_partition)

/* The upload as the core heard of it: MCUmgr's hooks (SMP work queue) and the Bluetooth
 * disconnect callback (host thread, dfu_link.c) step it.
 */
static K_MUTEX_DEFINE(upload_lock);
static enum dfu_upload_state upload_state = DFU_STATE_IDLE;

static void upload_event(enum dfu_upload_event event)
{
	int to_core;

	k_mutex_lock(&upload_lock, K_FOREVER);
	to_core = dfu_upload_step(&upload_state, event);
	k_mutex_unlock(&upload_lock);

	if (to_core != DFU_NO_EVENT) {
		(void)control_post_dfu((bms_dfu_t)to_core);
	}
}

static int slot_version(uint8_t area_id, struct dfu_version *version)
{
	struct mcuboot_img_header header;
	int err;

	err = boot_read_bank_header(area_id, &header, sizeof(header));
	if (err) {
		return err;
	}
	version->major = header.h.v1.sem_ver.major;
	version->minor = header.h.v1.sem_ver.minor;
	version->revision = header.h.v1.sem_ver.revision;
	return 0;
}

static enum mgmt_cb_return upload_check(uint32_t event, enum mgmt_cb_return prev_status,
					int32_t *rc, uint16_t *group, bool *abort_more,
					void *data, size_t data_size)
{
	const struct img_mgmt_upload_check *check = data;
	const struct img_mgmt_upload_req *req = check->req;
	struct dfu_version running;
	struct dfu_version offered = {0};
	enum dfu_upload_verdict verdict;

	ARG_UNUSED(event);
	ARG_UNUSED(prev_status);
	ARG_UNUSED(abort_more);
	ARG_UNUSED(data_size);

	if (req->off != 0) {
		upload_event(DFU_EVENT_RESUMED_CHUNK);
		return MGMT_CB_OK;
	}

	if (slot_version(RUNNING_SLOT, &running) != 0) {
		LOG_ERR("Running image header not readable: update refused");
		*rc = IMG_MGMT_ERR_VERSION_GET_FAILED;
		*group = MGMT_GROUP_ID_IMAGE;
		return MGMT_CB_ERROR_ERR;
	}

	verdict = dfu_upload_check(req->img_data.value, req->img_data.len, req->size, &running,
				   UPDATE_SLOT_SIZE, &offered);
	switch (verdict) {
	case DFU_UPLOAD_OK:
		LOG_INF("Update to %u.%u.%u accepted (%u bytes)", offered.major, offered.minor,
			offered.revision, (unsigned int)req->size);
		return MGMT_CB_OK;
	case DFU_UPLOAD_HEADER_INVALID:
		LOG_WRN("Update refused: no valid MCUboot image header");
		*rc = IMG_MGMT_ERR_INVALID_IMAGE_HEADER;
		break;
	case DFU_UPLOAD_VERSION_OLDER:
		LOG_WRN("Update refused: %u.%u.%u is older than the running %u.%u.%u",
			offered.major, offered.minor, offered.revision, running.major,
			running.minor, running.revision);
		*rc = IMG_MGMT_ERR_CURRENT_VERSION_IS_NEWER;
		break;
	case DFU_UPLOAD_TOO_LARGE:
		LOG_WRN("Update refused: %u bytes do not fit the %u-byte slot",
			(unsigned int)req->size, (unsigned int)UPDATE_SLOT_SIZE);
		*rc = IMG_MGMT_ERR_INVALID_IMAGE_TOO_LARGE;
		break;
	}
	*group = MGMT_GROUP_ID_IMAGE;
	return MGMT_CB_ERROR_ERR;
}

static enum mgmt_cb_return command_check(uint32_t event, enum mgmt_cb_return prev_status,
					 int32_t *rc, uint16_t *group, bool *abort_more,
					 void *data, size_t data_size)
{
	const struct mgmt_evt_op_cmd_arg *cmd = data;
	struct dfu_version running;
	struct dfu_version secondary;
	bool running_known;
	bool secondary_known;

	ARG_UNUSED(event);
	ARG_UNUSED(prev_status);
	ARG_UNUSED(abort_more);
	ARG_UNUSED(data_size);

	/* Two 32-byte header reads of internal flash per command (upload chunks included). */
	running_known = slot_version(RUNNING_SLOT, &running) == 0;
	secondary_known = slot_version(UPDATE_SLOT, &secondary) == 0;

	switch (dfu_command_check(cmd->group, cmd->id, cmd->op, boot_is_img_confirmed(),
				  running_known ? &running : NULL,
				  secondary_known ? &secondary : NULL)) {
	case DFU_COMMAND_OK:
		return MGMT_CB_OK;
	case DFU_COMMAND_IMAGE_ON_TEST:
		LOG_WRN("Image state change refused: the running image is on test, its "
			"self-check confirms it");
		*rc = MGMT_ERR_EACCESSDENIED;
		return MGMT_CB_ERROR_RC;
	case DFU_COMMAND_VERSION_UNKNOWN:
		LOG_WRN("Image state change refused: no image header readable in the %s slot",
			running_known ? "secondary" : "running");
		*rc = IMG_MGMT_ERR_VERSION_GET_FAILED;
		*group = MGMT_GROUP_ID_IMAGE;
		return MGMT_CB_ERROR_ERR;
	case DFU_COMMAND_SECONDARY_OLDER:
		LOG_WRN("Image state change refused: the secondary slot holds %u.%u.%u, older than "
			"the running %u.%u.%u",
			secondary.major, secondary.minor, secondary.revision, running.major,
			running.minor, running.revision);
		*rc = IMG_MGMT_ERR_CURRENT_VERSION_IS_NEWER;
		*group = MGMT_GROUP_ID_IMAGE;
		return MGMT_CB_ERROR_ERR;
	}
	return MGMT_CB_OK;
}

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
		upload_event(DFU_EVENT_STARTED);
		break;
	case MGMT_EVT_OP_IMG_MGMT_DFU_PENDING:
		LOG_INF("Update received, pending reboot");
		upload_event(DFU_EVENT_PENDING);
		break;
	case MGMT_EVT_OP_IMG_MGMT_DFU_STOPPED:
		LOG_WRN("Update stopped before completion");
		upload_event(DFU_EVENT_STOPPED);
		break;
	default:
		break;
	}

	return MGMT_CB_OK;
}

static struct mgmt_callback upload_check_cb = {
	.callback = upload_check,
	.event_id = MGMT_EVT_OP_IMG_MGMT_DFU_CHUNK,
};

static struct mgmt_callback command_check_cb = {
	.callback = command_check,
	.event_id = MGMT_EVT_OP_CMD_RECV,
};

static struct mgmt_callback img_status_cb = {
	.callback = img_status,
	.event_id = MGMT_EVT_OP_IMG_MGMT_DFU_STARTED | MGMT_EVT_OP_IMG_MGMT_DFU_PENDING |
		    MGMT_EVT_OP_IMG_MGMT_DFU_STOPPED,
};

/* SET-2: MCUmgr's reset command (the phone's last step of an update) reboots without a
 * disconnect callback, so the settings held back for the flash are stored first: the control
 * thread handles the flush well within the command's reset delay
 * (CONFIG_MCUMGR_GRP_OS_RESET_MS).
 */
static enum mgmt_cb_return reset_requested(uint32_t event, enum mgmt_cb_return prev_status,
					   int32_t *rc, uint16_t *group, bool *abort_more,
					   void *data, size_t data_size)
{
	int err;

	ARG_UNUSED(event);
	ARG_UNUSED(prev_status);
	ARG_UNUSED(rc);
	ARG_UNUSED(group);
	ARG_UNUSED(abort_more);
	ARG_UNUSED(data);
	ARG_UNUSED(data_size);

	err = control_post_flush();
	if (err) {
		LOG_WRN("Records not flushed before the reset (err %d)", err);
	}
	return MGMT_CB_OK;
}

static struct mgmt_callback reset_cb = {
	.callback = reset_requested,
	.event_id = MGMT_EVT_OP_OS_MGMT_RESET,
};

void dfu_upload_link_lost(void)
{
	upload_event(DFU_EVENT_LINK_LOST);
}

int dfu_init(void)
{
	mgmt_callback_register(&upload_check_cb);
	mgmt_callback_register(&command_check_cb);
	mgmt_callback_register(&img_status_cb);
	mgmt_callback_register(&reset_cb);

	if (IS_ENABLED(CONFIG_BT)) {
		return dfu_link_init();
	}
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
