/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * What the firmware accepts over MCUmgr (dfu.c), kept apart from MCUmgr and MCUboot types so
 * that the Twister suite runs it on native_sim, which has neither:
 *
 * - an upload starts only with an MCUboot image header whose sizes fit the upload, a version
 *   not older than the running image's, and an upload that fits the secondary slot. MCUboot
 *   checks the signature and the security counter again before it swaps; this refuses a wrong
 *   image at the first chunk instead of after the whole transfer;
 * - while the running image is in test mode no image-state write runs: only the firmware's
 *   own self-check confirms it (DFU-1), and nothing else is set to boot meanwhile;
 * - no image-state write runs while the secondary slot holds an image older than the running
 *   one (after an update, the previous image stays there): a "test" of it would make MCUboot
 *   swap it in, a downgrade the upload check refuses, and MCUboot's security counter lets
 *   through while the counter is unchanged. MCUmgr's hooks do not show which slot a write
 *   names, so every image-state write waits until an upload has replaced that image;
 * - what the core hears of an upload (DFU-1, DFU-2): started, completed, or aborted, also
 *   when the uploading link drops (MCUmgr itself keeps waiting for the client), and started
 *   again when a client resumes an upload the core was told had stopped.
 *
 * The header layout is MCUboot's struct image_header (boot/bootutil/include/bootutil/image.h):
 * little-endian, 32 bytes, the version at byte 20.
 */

#include <zephyr/mgmt/mcumgr/mgmt/mgmt_defines.h>
#include <zephyr/sys/byteorder.h>

#include "app.h"

#define IMAGE_MAGIC           0x96f3b83dU
#define IMAGE_HEADER_LEN      32U
#define IMAGE_OFF_MAGIC       0
#define IMAGE_OFF_HDR_SIZE    8
#define IMAGE_OFF_PROTECT_TLV 10
#define IMAGE_OFF_IMG_SIZE    12
#define IMAGE_OFF_VER_MAJOR   20
#define IMAGE_OFF_VER_MINOR   21
#define IMAGE_OFF_VER_REV     22

/* The image group's "state" command (IMG_MGMT_ID_STATE of img_mgmt.h, which needs MCUboot's
 * headers): read lists the slots, write sets one to test or confirms one.
 */
#define IMAGE_STATE_ID 0U

static int version_cmp(const struct dfu_version *a, const struct dfu_version *b)
{
	if (a->major != b->major) {
		return a->major < b->major ? -1 : 1;
	}
	if (a->minor != b->minor) {
		return a->minor < b->minor ? -1 : 1;
	}
	if (a->revision != b->revision) {
		return a->revision < b->revision ? -1 : 1;
	}
	return 0;
}

enum dfu_upload_verdict dfu_upload_check(const uint8_t *chunk, size_t chunk_len,
					 size_t upload_len, const struct dfu_version *running,
					 size_t slot_len, struct dfu_version *offered)
{
	uint32_t hdr_size;
	uint32_t img_size;
	uint32_t protect_tlv;

	if (chunk == NULL || chunk_len < IMAGE_HEADER_LEN ||
	    sys_get_le32(&chunk[IMAGE_OFF_MAGIC]) != IMAGE_MAGIC) {
		return DFU_UPLOAD_HEADER_INVALID;
	}

	hdr_size = sys_get_le16(&chunk[IMAGE_OFF_HDR_SIZE]);
	protect_tlv = sys_get_le16(&chunk[IMAGE_OFF_PROTECT_TLV]);
	img_size = sys_get_le32(&chunk[IMAGE_OFF_IMG_SIZE]);
	/* The signed TLVs follow header and code: the upload is longer than both. */
	if (hdr_size < IMAGE_HEADER_LEN || img_size == 0 ||
	    (uint64_t)hdr_size + img_size + protect_tlv >= upload_len) {
		return DFU_UPLOAD_HEADER_INVALID;
	}

	offered->major = chunk[IMAGE_OFF_VER_MAJOR];
	offered->minor = chunk[IMAGE_OFF_VER_MINOR];
	offered->revision = sys_get_le16(&chunk[IMAGE_OFF_VER_REV]);
	if (running != NULL && version_cmp(offered, running) < 0) {
		return DFU_UPLOAD_VERSION_OLDER;
	}

	if (upload_len > slot_len) {
		return DFU_UPLOAD_TOO_LARGE;
	}

	return DFU_UPLOAD_OK;
}

enum dfu_command_verdict dfu_command_check(uint16_t group, uint8_t id, uint8_t op,
					   bool image_confirmed,
					   const struct dfu_version *running,
					   const struct dfu_version *secondary)
{
	if (!(group == MGMT_GROUP_ID_IMAGE && id == IMAGE_STATE_ID && op == MGMT_OP_WRITE)) {
		return DFU_COMMAND_OK;
	}
	if (!image_confirmed) {
		return DFU_COMMAND_IMAGE_ON_TEST;
	}
	if (running == NULL || secondary == NULL) {
		return DFU_COMMAND_VERSION_UNKNOWN;
	}
	if (version_cmp(secondary, running) < 0) {
		return DFU_COMMAND_SECONDARY_OLDER;
	}
	return DFU_COMMAND_OK;
}

int dfu_upload_step(enum dfu_upload_state *state, enum dfu_upload_event event)
{
	enum dfu_upload_state before = *state;

	switch (event) {
	case DFU_EVENT_STARTED:
		*state = DFU_STATE_RUNNING;
		return BMS_DFU_STARTED;
	case DFU_EVENT_RESUMED_CHUNK:
		if (before == DFU_STATE_LINK_LOST) {
			*state = DFU_STATE_RUNNING;
			return BMS_DFU_STARTED;
		}
		/* Each chunk keeps the core's 2-minute stall timeout from aborting the upload. */
		return before == DFU_STATE_RUNNING ? BMS_DFU_PROGRESS : DFU_NO_EVENT;
	case DFU_EVENT_PENDING:
		*state = DFU_STATE_IDLE;
		return BMS_DFU_COMPLETED;
	case DFU_EVENT_STOPPED:
		*state = DFU_STATE_IDLE;
		return before == DFU_STATE_RUNNING ? BMS_DFU_ABORTED : DFU_NO_EVENT;
	case DFU_EVENT_LINK_LOST:
		if (before == DFU_STATE_RUNNING) {
			*state = DFU_STATE_LINK_LOST;
			return BMS_DFU_ABORTED;
		}
		return DFU_NO_EVENT;
	}
	return DFU_NO_EVENT;
}

bool dfu_drop_stops_upload(int uploader, int link)
{
	return uploader == DFU_UPLOADER_UNKNOWN || uploader == link;
}
