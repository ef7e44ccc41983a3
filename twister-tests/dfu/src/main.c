/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * dfu_check.c, the rules dfu.c applies in MCUmgr's hooks (native_sim has no MCUboot): the
 * first chunk of an upload is an MCUboot image header (MCUboot's struct image_header, 32
 * bytes little-endian) no older than the running image, the upload fits the slot, and no
 * image-state write runs while the running image is on test or while the secondary slot holds
 * an older image.
 */

#include <string.h>

#include <zephyr/mgmt/mcumgr/mgmt/mgmt_defines.h>
#include <zephyr/sys/byteorder.h>
#include <zephyr/ztest.h>

#include "app.h"

#define SLOT_LEN (472U * 1024U)
#define CODE_LEN 200000U
#define HEADER_LEN 0x200U
#define TLV_LEN 0x150U
#define UPLOAD_LEN (HEADER_LEN + CODE_LEN + TLV_LEN)

/* img_mgmt.h IMG_MGMT_ID_STATE and IMG_MGMT_ID_UPLOAD (that header needs MCUboot's). */
#define IMAGE_STATE 0
#define IMAGE_UPLOAD 1

static const struct dfu_version running = {.major = 1, .minor = 2, .revision = 3};

/* The first chunk of a signed image of version major.minor.revision. */
static void image_chunk(uint8_t chunk[64], uint8_t major, uint8_t minor, uint16_t revision)
{
	memset(chunk, 0, 64);
	sys_put_le32(0x96f3b83dU, &chunk[0]);  /* ih_magic */
	sys_put_le16(HEADER_LEN, &chunk[8]);   /* ih_hdr_size */
	sys_put_le16(0, &chunk[10]);           /* ih_protect_tlv_size */
	sys_put_le32(CODE_LEN, &chunk[12]);    /* ih_img_size */
	chunk[20] = major;                     /* ih_ver */
	chunk[21] = minor;
	sys_put_le16(revision, &chunk[22]);
}

static enum dfu_upload_verdict check(const uint8_t *chunk, size_t chunk_len, size_t upload_len)
{
	struct dfu_version offered;

	return dfu_upload_check(chunk, chunk_len, upload_len, &running, SLOT_LEN, &offered);
}

/* DFU-1: an image no older than the running one that fits the slot is accepted, and the
 * version read from its header is the one offered.
 */
ZTEST(dfu, test_dfu_1_upload_of_same_or_newer_image_accepted)
{
	uint8_t chunk[64];
	struct dfu_version offered;

	image_chunk(chunk, 1, 2, 3);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_OK, "same version");
	image_chunk(chunk, 1, 2, 4);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_OK, "newer revision");
	image_chunk(chunk, 2, 0, 0);
	zassert_equal(dfu_upload_check(chunk, sizeof(chunk), UPLOAD_LEN, &running, SLOT_LEN,
				       &offered),
		      DFU_UPLOAD_OK, "newer major");
	zassert_equal(offered.major, 2);
	zassert_equal(offered.minor, 0);
	zassert_equal(offered.revision, 0);
}

/* DFU-1 (downgrade prevention): an older major, minor or revision is refused at the first
 * chunk, before anything is written to the slot.
 */
ZTEST(dfu, test_dfu_1_upload_of_older_image_refused)
{
	uint8_t chunk[64];

	image_chunk(chunk, 1, 2, 2);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_VERSION_OLDER);
	image_chunk(chunk, 1, 1, 900);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_VERSION_OLDER);
	image_chunk(chunk, 0, 255, 65535);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_VERSION_OLDER);
}

/* DFU-1: an upload that does not start with an MCUboot image header, or whose header
 * claims more than the upload holds, is refused.
 */
ZTEST(dfu, test_dfu_1_upload_without_valid_header_refused)
{
	uint8_t chunk[64];

	image_chunk(chunk, 1, 2, 3);
	zassert_equal(check(chunk, 16, UPLOAD_LEN), DFU_UPLOAD_HEADER_INVALID, "short chunk");
	zassert_equal(check(NULL, 0, UPLOAD_LEN), DFU_UPLOAD_HEADER_INVALID, "no chunk");

	chunk[0] ^= 0x01;
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_HEADER_INVALID,
		      "wrong magic");

	image_chunk(chunk, 1, 2, 3);
	zassert_equal(check(chunk, sizeof(chunk), HEADER_LEN + CODE_LEN),
		      DFU_UPLOAD_HEADER_INVALID, "no room for the signature TLVs");

	image_chunk(chunk, 1, 2, 3);
	sys_put_le16(16, &chunk[8]);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_HEADER_INVALID,
		      "header size below the header itself");

	image_chunk(chunk, 1, 2, 3);
	sys_put_le32(0, &chunk[12]);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_HEADER_INVALID,
		      "no code");

	image_chunk(chunk, 1, 2, 3);
	sys_put_le32(0xffffffffU, &chunk[12]);
	zassert_equal(check(chunk, sizeof(chunk), UPLOAD_LEN), DFU_UPLOAD_HEADER_INVALID,
		      "code size overflowing the upload");
}

/* DFU-1: an upload longer than the secondary slot is refused at the first chunk. */
ZTEST(dfu, test_dfu_1_upload_larger_than_slot_refused)
{
	uint8_t chunk[64];

	image_chunk(chunk, 1, 2, 3);
	zassert_equal(check(chunk, sizeof(chunk), SLOT_LEN), DFU_UPLOAD_OK, "exactly the slot");
	zassert_equal(check(chunk, sizeof(chunk), SLOT_LEN + 1), DFU_UPLOAD_TOO_LARGE);
}

static enum dfu_command_verdict command(uint16_t group, uint8_t id, uint8_t op, bool confirmed)
{
	static const struct dfu_version secondary = {.major = 1, .minor = 3, .revision = 0};

	return dfu_command_check(group, id, op, confirmed, &running, &secondary);
}

/* DFU-1: while the running image is on test no image-state write runs (neither "confirm"
 * nor "test"): only the firmware's own self-check confirms it. Reading the state, uploading and
 * every other command stay allowed; once confirmed, state writes are allowed again.
 */
ZTEST(dfu, test_dfu_1_confirm_refused_while_image_on_test)
{
	zassert_equal(command(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_WRITE, false),
		      DFU_COMMAND_IMAGE_ON_TEST, "image state written while on test");
	zassert_equal(command(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_READ, false),
		      DFU_COMMAND_OK);
	zassert_equal(command(MGMT_GROUP_ID_IMAGE, IMAGE_UPLOAD, MGMT_OP_WRITE, false),
		      DFU_COMMAND_OK);
	zassert_equal(command(MGMT_GROUP_ID_OS, IMAGE_STATE, MGMT_OP_WRITE, false), DFU_COMMAND_OK,
		      "another group's command 0 is not the image state");
	zassert_equal(command(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_WRITE, true),
		      DFU_COMMAND_OK, "a confirmed image may set a newer one to test");
}

/* DFU-1 (downgrade prevention): after an update the previous image stays in the secondary
 * slot; an image-state write ("test" or "confirm" of it: MCUmgr's hooks do not say which slot)
 * would make MCUboot swap it in without the upload's version check, and its security counter
 * is the same while releases keep it. No image-state write runs while the secondary slot holds
 * an image older (major, minor or revision) than the running one, or either version is
 * unknown; one of the same or a newer version (a new upload) may be tested. Reads, uploads
 * and other commands stay allowed, so a new upload replaces the older image.
 */
ZTEST(dfu, test_dfu_1_an_older_image_in_the_secondary_slot_is_never_set_to_boot)
{
	static const struct dfu_version older[] = {
		{.major = 1, .minor = 2, .revision = 2},
		{.major = 1, .minor = 1, .revision = 900},
		{.major = 0, .minor = 255, .revision = 65535},
	};
	static const struct dfu_version same_or_newer[] = {
		{.major = 1, .minor = 2, .revision = 3},
		{.major = 1, .minor = 2, .revision = 4},
		{.major = 2, .minor = 0, .revision = 0},
	};

	for (size_t i = 0; i < ARRAY_SIZE(older); i++) {
		zassert_equal(dfu_command_check(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_WRITE,
						true, &running, &older[i]),
			      DFU_COMMAND_SECONDARY_OLDER,
			      "%u.%u.%u in the secondary slot set to boot under %u.%u.%u",
			      older[i].major, older[i].minor, older[i].revision, running.major,
			      running.minor, running.revision);
		zassert_equal(dfu_command_check(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_READ,
						true, &running, &older[i]),
			      DFU_COMMAND_OK, "state read refused");
		zassert_equal(dfu_command_check(MGMT_GROUP_ID_IMAGE, IMAGE_UPLOAD, MGMT_OP_WRITE,
						true, &running, &older[i]),
			      DFU_COMMAND_OK, "upload over the older image refused");
	}
	for (size_t i = 0; i < ARRAY_SIZE(same_or_newer); i++) {
		zassert_equal(dfu_command_check(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_WRITE,
						true, &running, &same_or_newer[i]),
			      DFU_COMMAND_OK, "%u.%u.%u refused", same_or_newer[i].major,
			      same_or_newer[i].minor, same_or_newer[i].revision);
	}
	zassert_equal(dfu_command_check(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_WRITE, true,
					&running, NULL),
		      DFU_COMMAND_VERSION_UNKNOWN, "secondary header unreadable");
	zassert_equal(dfu_command_check(MGMT_GROUP_ID_IMAGE, IMAGE_STATE, MGMT_OP_WRITE, true,
					NULL, &same_or_newer[2]),
		      DFU_COMMAND_VERSION_UNKNOWN, "running header unreadable");
	zassert_equal(dfu_command_check(MGMT_GROUP_ID_OS, IMAGE_STATE, MGMT_OP_WRITE, true,
					&running, &older[0]),
		      DFU_COMMAND_OK, "another group's command 0 is not the image state");
}

/* DFU-1, DFU-2: the core hears "aborted" when the uploading link drops (MCUmgr itself would
 * wait for the client for ever), once; a client that resumes the upload later makes it
 * "started" again, and a completed upload is "completed".
 */
ZTEST(dfu, test_dfu_1_dropped_link_aborts_update)
{
	enum dfu_upload_state state = DFU_STATE_IDLE;

	zassert_equal(dfu_upload_step(&state, DFU_EVENT_LINK_LOST), DFU_NO_EVENT,
		      "a link without an upload aborts nothing");
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_STARTED), BMS_DFU_STARTED);
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_RESUMED_CHUNK), BMS_DFU_PROGRESS,
		      "chunks of a running upload keep it alive in the core");
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_LINK_LOST), BMS_DFU_ABORTED);
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_LINK_LOST), DFU_NO_EVENT,
		      "aborted twice");
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_STOPPED), DFU_NO_EVENT,
		      "MCUmgr's later stop aborts it a second time");

	state = DFU_STATE_IDLE;
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_STARTED), BMS_DFU_STARTED);
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_LINK_LOST), BMS_DFU_ABORTED);
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_RESUMED_CHUNK), BMS_DFU_STARTED,
		      "a resumed upload is running again");
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_PENDING), BMS_DFU_COMPLETED);
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_LINK_LOST), DFU_NO_EVENT,
		      "a link dropping after the upload completed aborts nothing");
}

/* DFU-1: with two authenticated links, only the one that last wrote to SMP carries the
 * upload: the other dropping leaves it running; with none known, any drop stops it.
 */
ZTEST(dfu, test_dfu_1_only_the_uploading_link_dropping_aborts)
{
	zassert_false(dfu_drop_stops_upload(1, 0), "the owner's other phone leaves");
	zassert_true(dfu_drop_stops_upload(1, 1), "the uploading phone leaves");
	zassert_true(dfu_drop_stops_upload(DFU_UPLOADER_UNKNOWN, 0), "unknown: any link");
	zassert_true(dfu_drop_stops_upload(DFU_UPLOADER_UNKNOWN, 1), "unknown: any link");
}

/* DFU-2: an upload MCUmgr stops on an error is aborted for the core. */
ZTEST(dfu, test_dfu_2_stopped_upload_aborts_update)
{
	enum dfu_upload_state state = DFU_STATE_IDLE;

	zassert_equal(dfu_upload_step(&state, DFU_EVENT_STARTED), BMS_DFU_STARTED);
	zassert_equal(dfu_upload_step(&state, DFU_EVENT_STOPPED), BMS_DFU_ABORTED);
	zassert_equal(state, DFU_STATE_IDLE);
}

ZTEST_SUITE(dfu, NULL, NULL, NULL, NULL, NULL);
