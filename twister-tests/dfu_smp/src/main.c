/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * dfu.c's MCUmgr hooks through MCUmgr itself (DFU-1, DFU-2, SET-2): SMP requests as a phone
 * sends them (SMP v2 header, CBOR payload) go through MCUmgr's dummy SMP transport to MCUmgr's
 * own handlers (img_mgmt, os_mgmt), with the callbacks of dfu_init() registered. The answers,
 * the image slots of the flash simulator (boards/native_sim.overlay, native_sim's partitions:
 * slot0_partition runs, slot1_partition receives) and what dfu.c posts to the core show what
 * was refused and what was done.
 *
 * The images are MCUboot images as img_mgmt and dfu.c read them: a header (MCUboot's struct
 * image_header, 32 bytes little-endian, the version at byte 20), code, and a TLV area with one
 * SHA-256 TLV, the hash a phone names in an image-state write. Nothing here checks that hash
 * against the image (MCUboot does, before it swaps). A running image "on test" is what MCUboot
 * leaves after a test swap: magic and copy-done in the primary slot's trailer, no image-ok.
 * control.c is faked: the events dfu.c posts to the core and its flush requests are counted.
 */

#include <string.h>

#include <zephyr/dfu/mcuboot.h>
#include <zephyr/kernel.h>
#include <zephyr/mgmt/mcumgr/grp/img_mgmt/img_mgmt.h>
#include <zephyr/mgmt/mcumgr/grp/os_mgmt/os_mgmt.h>
#include <zephyr/mgmt/mcumgr/mgmt/callbacks.h>
#include <zephyr/mgmt/mcumgr/mgmt/mgmt_defines.h>
#include <zephyr/mgmt/mcumgr/transport/smp_dummy.h>
#include <zephyr/net_buf.h>
#include <zephyr/storage/flash_map.h>
#include <zephyr/sys/byteorder.h>
#include <zephyr/ztest.h>

#include <bootutil/bootutil_public.h>
#include <mgmt/mcumgr/util/zcbor_bulk.h>
#include <zcbor_decode.h>
#include <zcbor_encode.h>

#include "app.h"

#define RUNNING_SLOT FIXED_PARTITION_ID(slot0_partition)
#define UPDATE_SLOT FIXED_PARTITION_ID(slot1_partition)

/* The image: header, code, TLV area (TLV info, SHA-256 TLV header, hash). */
#define HDR_LEN 32U
#define CODE_LEN 1000U
#define HASH_LEN 32U
#define TLV_LEN (4U + 4U + HASH_LEN)
#define IMAGE_LEN (HDR_LEN + CODE_LEN + TLV_LEN)

/* A phone's first chunk. Longer than img_mgmt's write buffer, so that an accepted first chunk
 * reaches the slot at once: a refused one must leave it erased.
 */
#define FIRST_CHUNK 640U
BUILD_ASSERT(FIRST_CHUNK > CONFIG_IMG_BLOCK_BUF_SIZE);

/* SMP header (8 bytes): op and version in byte 0, flags, length, group, sequence, command. */
#define SMP_HDR_LEN 8U
#define SMP_VERSION_2 1U
#define ANSWER_WAIT_S 3

/* The running image's version, in slot 0. */
static const struct dfu_version running = {.major = 1, .minor = 2, .revision = 3};

/* --- control.c, faked: what dfu.c tells the core ------------------------------------------- */

static K_MUTEX_DEFINE(events_lock);
static bms_dfu_t events[16];
static size_t event_count;

int control_post_dfu(bms_dfu_t event)
{
	k_mutex_lock(&events_lock, K_FOREVER);
	if (event_count < ARRAY_SIZE(events)) {
		events[event_count] = event;
	}
	event_count++;
	k_mutex_unlock(&events_lock);
	return 0;
}

static atomic_t flushes = ATOMIC_INIT(0);

int control_post_flush(void)
{
	atomic_inc(&flushes);
	return 0;
}

int control_self_check_wait(k_timeout_t timeout)
{
	ARG_UNUSED(timeout);
	return 1;
}

static void clear_events(void)
{
	k_mutex_lock(&events_lock, K_FOREVER);
	event_count = 0;
	k_mutex_unlock(&events_lock);
}

static const char *event_name(bms_dfu_t event)
{
	switch (event) {
	case BMS_DFU_STARTED:
		return "started";
	case BMS_DFU_COMPLETED:
		return "completed";
	case BMS_DFU_FAILED:
		return "failed";
	case BMS_DFU_ABORTED:
		return "aborted";
	case BMS_DFU_PROGRESS:
		return "progress";
	}
	return "?";
}

/* The core heard exactly @p want (in that order) since the last clear_events(). The events are
 * copied out first: a failed assertion ends the test thread, which must not hold the lock.
 */
static void expect_events(const bms_dfu_t *want, size_t count, const char *what)
{
	bms_dfu_t heard[ARRAY_SIZE(events)];
	size_t heard_count;

	k_mutex_lock(&events_lock, K_FOREVER);
	heard_count = event_count;
	memcpy(heard, events, sizeof(heard));
	k_mutex_unlock(&events_lock);

	for (size_t i = 0; i < MIN(heard_count, ARRAY_SIZE(heard)); i++) {
		TC_PRINT("%s: event %zu: %s\n", what, i, event_name(heard[i]));
	}
	zassert_equal(heard_count, count, "%s: the core heard %zu events, not %zu", what,
		      heard_count, count);
	for (size_t i = 0; i < count; i++) {
		zassert_equal(heard[i], want[i], "%s: event %zu is %s, not %s", what, i,
			      event_name(heard[i]), event_name(want[i]));
	}
}

#define EXPECT_EVENTS(what, ...)                                                                   \
	expect_events((const bms_dfu_t[]){__VA_ARGS__},                                            \
		      sizeof((const bms_dfu_t[]){__VA_ARGS__}) / sizeof(bms_dfu_t), what)
#define EXPECT_NO_EVENTS(what) expect_events(NULL, 0, what)

/* --- images and slots ------------------------------------------------------------------------ */

/* Room past the image for a chunk that overruns it. */
static uint8_t image[IMAGE_LEN + 64];

/* An MCUboot image of version @p v into @p img; its SHA-256 TLV is @p hash_byte repeated. */
static void make_image(uint8_t *img, struct dfu_version v, uint8_t hash_byte)
{
	uint8_t *tlv = &img[HDR_LEN + CODE_LEN];

	memset(img, 0, IMAGE_LEN);
	sys_put_le32(0x96f3b83dU, &img[0]); /* ih_magic */
	sys_put_le16(HDR_LEN, &img[8]);     /* ih_hdr_size */
	sys_put_le16(0, &img[10]);          /* ih_protect_tlv_size */
	sys_put_le32(CODE_LEN, &img[12]);   /* ih_img_size */
	img[20] = v.major;                  /* ih_ver */
	img[21] = v.minor;
	sys_put_le16(v.revision, &img[22]);
	for (size_t i = 0; i < CODE_LEN; i++) {
		img[HDR_LEN + i] = (uint8_t)(i * 7U + v.revision);
	}
	sys_put_le16(0x6907, &tlv[0]);   /* IMAGE_TLV_INFO_MAGIC */
	sys_put_le16(TLV_LEN, &tlv[2]);  /* it_tlv_tot, the info included */
	sys_put_le16(0x10, &tlv[4]);     /* IMAGE_TLV_SHA256 */
	sys_put_le16(HASH_LEN, &tlv[6]);
	memset(&tlv[8], hash_byte, HASH_LEN);
}

static const uint8_t *image_hash(const uint8_t *img)
{
	return &img[HDR_LEN + CODE_LEN + 8U];
}

static void erase_slot(uint8_t id)
{
	const struct flash_area *fa;

	zassert_ok(flash_area_open(id, &fa));
	zassert_ok(flash_area_erase(fa, 0, fa->fa_size));
	flash_area_close(fa);
}

static void write_slot(uint8_t id, const uint8_t *data, size_t len)
{
	const struct flash_area *fa;

	zassert_ok(flash_area_open(id, &fa));
	zassert_ok(flash_area_write(fa, 0, data, len));
	flash_area_close(fa);
}

static void read_slot(uint8_t id, uint8_t *data, size_t len)
{
	const struct flash_area *fa;

	zassert_ok(flash_area_open(id, &fa));
	zassert_ok(flash_area_read(fa, 0, data, len));
	flash_area_close(fa);
}

/* The first @p len bytes of slot @p id are erased: nothing was written there. */
static bool slot_erased(uint8_t id, size_t len)
{
	static uint8_t buf[IMAGE_LEN];

	zassert_true(len <= sizeof(buf));
	read_slot(id, buf, len);
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != 0xff) {
			return false;
		}
	}
	return true;
}

/* The slot holds @p img's first @p len bytes. */
static bool slot_holds(uint8_t id, const uint8_t *img, size_t len)
{
	static uint8_t buf[IMAGE_LEN];

	zassert_true(len <= sizeof(buf));
	read_slot(id, buf, len);
	return memcmp(buf, img, len) == 0;
}

/* The running image as MCUboot leaves it after a test swap: magic and copy-done in the
 * primary slot's trailer, image-ok unset, so that it reverts unless confirmed.
 */
static void running_image_on_test(void)
{
	static const uint8_t flag_set = 1; /* BOOT_FLAG_SET */
	const struct flash_area *fa;

	zassert_ok(flash_area_open(RUNNING_SLOT, &fa));
	zassert_ok(boot_set_next(fa, false, false), "primary slot's trailer magic");
	/* copy_done sits BOOT_MAX_ALIGN above swap_info in MCUboot's trailer. */
	zassert_ok(flash_area_write(fa, boot_swap_info_off(fa) + BOOT_MAX_ALIGN, &flag_set, 1));
	flash_area_close(fa);
	zassert_false(boot_is_img_confirmed(), "the running image is not on test");
	zassert_equal(mcuboot_swap_type(), BOOT_SWAP_TYPE_REVERT, "not what MCUboot leaves");
}

/* --- SMP requests and answers ---------------------------------------------------------------- */

static struct net_buf *answer_buf;
static uint8_t seq;

/* Sends one SMP v2 request (@p group, command @p id, @p op) with CBOR @p payload and waits for
 * the answer, whose header must match; leaves its CBOR payload in answer_buf.
 */
static void smp_request(uint16_t group, uint8_t op, uint8_t id, const uint8_t *payload,
			size_t len)
{
	static uint8_t frame[SMP_HDR_LEN + 1024];

	zassert_true(len <= sizeof(frame) - SMP_HDR_LEN);
	seq++;
	frame[0] = (uint8_t)((SMP_VERSION_2 << 3) | op);
	frame[1] = 0;
	sys_put_be16((uint16_t)len, &frame[2]);
	sys_put_be16(group, &frame[4]);
	frame[6] = seq;
	frame[7] = id;
	memcpy(&frame[SMP_HDR_LEN], payload, len);

	if (answer_buf != NULL) {
		net_buf_unref(answer_buf);
		answer_buf = NULL;
	}
	smp_dummy_clear_state();
	zassert_ok(smp_dummy_tx_pkt(frame, (int)(SMP_HDR_LEN + len)));
	smp_dummy_add_data();
	zassert_true(smp_dummy_wait_for_data(ANSWER_WAIT_S), "no SMP answer");
	answer_buf = smp_dummy_get_outgoing();
	zassert_not_null(answer_buf, "SMP answer not decoded");
	zassert_true(answer_buf->len >= SMP_HDR_LEN);
	zassert_equal(answer_buf->data[0] & 0x07, op + 1, "not the answer to op %u", op);
	zassert_equal(sys_get_be16(&answer_buf->data[2]), answer_buf->len - SMP_HDR_LEN);
	zassert_equal(sys_get_be16(&answer_buf->data[4]), group);
	zassert_equal(answer_buf->data[6], seq);
	zassert_equal(answer_buf->data[7], id);
	net_buf_pull(answer_buf, SMP_HDR_LEN);
}

struct answer {
	bool has_rc;     /* "rc": an SMP error (MGMT_ERR_*) */
	int32_t rc;
	bool has_err;    /* "err": {"group", "rc"}, a group's error (SMP v2) */
	uint32_t err_group;
	int32_t err_rc;
	bool has_off;    /* "off": an upload's next offset */
	size_t off;
	bool has_images; /* "images": the image state */
};

static bool decode_err(zcbor_state_t *zsd, void *value)
{
	struct answer *a = value;
	size_t decoded = 0;
	struct zcbor_map_decode_key_val err[] = {
		ZCBOR_MAP_DECODE_KEY_DECODER("group", zcbor_uint32_decode, &a->err_group),
		ZCBOR_MAP_DECODE_KEY_DECODER("rc", zcbor_int32_decode, &a->err_rc),
	};

	return zcbor_map_decode_bulk(zsd, err, ARRAY_SIZE(err), &decoded) == 0 && decoded == 2;
}

static struct answer read_answer(void)
{
	struct answer a = {0};
	zcbor_state_t zsd[8];
	size_t decoded = 0;
	struct zcbor_map_decode_key_val keys[] = {
		ZCBOR_MAP_DECODE_KEY_DECODER("rc", zcbor_int32_decode, &a.rc),
		ZCBOR_MAP_DECODE_KEY_DECODER("err", decode_err, &a),
		ZCBOR_MAP_DECODE_KEY_DECODER("off", zcbor_size_decode, &a.off),
		ZCBOR_MAP_DECODE_KEY_DECODER("images", zcbor_any_skip, NULL),
	};

	zcbor_new_decode_state(zsd, ARRAY_SIZE(zsd), answer_buf->data, answer_buf->len, 1, NULL,
			       0);
	zassert_ok(zcbor_map_decode_bulk(zsd, keys, ARRAY_SIZE(keys), &decoded),
		   "the answer is no CBOR map");
	a.has_rc = zcbor_map_decode_bulk_key_found(keys, ARRAY_SIZE(keys), "rc");
	a.has_err = zcbor_map_decode_bulk_key_found(keys, ARRAY_SIZE(keys), "err");
	a.has_off = zcbor_map_decode_bulk_key_found(keys, ARRAY_SIZE(keys), "off");
	a.has_images = zcbor_map_decode_bulk_key_found(keys, ARRAY_SIZE(keys), "images");
	TC_PRINT("answer:");
	if (a.has_rc) {
		TC_PRINT(" rc %d", a.rc);
	}
	if (a.has_err) {
		TC_PRINT(" err {group %u, rc %d}", a.err_group, a.err_rc);
	}
	if (a.has_off) {
		TC_PRINT(" off %zu", a.off);
	}
	TC_PRINT("%s\n", a.has_images ? " images" : "");
	return a;
}

/* An image-group error in the answer: "err": {"group": 1, "rc": @p rc}. (img_mgmt adds the
 * offset of the upload it holds to an upload's error.)
 */
static void expect_image_error(const struct answer *a, int32_t rc, const char *what)
{
	zassert_true(a->has_err, "%s: accepted (no error in the answer)", what);
	zassert_equal(a->err_group, MGMT_GROUP_ID_IMAGE, "%s: error of group %u", what,
		      a->err_group);
	zassert_equal(a->err_rc, rc, "%s: error %d, not %d", what, a->err_rc, rc);
}

/* An upload request as a phone sends it: image 0, the offset and the data, the whole length in
 * the first chunk, and optionally the SHA-256 of the upload (which lets it resume).
 */
static struct answer upload(const uint8_t *img, size_t total, size_t off, size_t len,
			    const uint8_t *sha)
{
	static uint8_t payload[1024];
	zcbor_state_t zse[4];
	bool ok;

	zcbor_new_encode_state(zse, ARRAY_SIZE(zse), payload, sizeof(payload), 0);
	ok = zcbor_map_start_encode(zse, 5) && zcbor_tstr_put_lit(zse, "image") &&
	     zcbor_uint32_put(zse, 0) && zcbor_tstr_put_lit(zse, "off") &&
	     zcbor_size_put(zse, off) && zcbor_tstr_put_lit(zse, "data") &&
	     zcbor_bstr_encode_ptr(zse, (const char *)&img[off], len);
	if (off == 0) {
		ok = ok && zcbor_tstr_put_lit(zse, "len") && zcbor_size_put(zse, total);
	}
	if (sha != NULL) {
		ok = ok && zcbor_tstr_put_lit(zse, "sha") &&
		     zcbor_bstr_encode_ptr(zse, (const char *)sha, HASH_LEN);
	}
	ok = ok && zcbor_map_end_encode(zse, 5);
	zassert_true(ok, "upload request not encoded");
	smp_request(MGMT_GROUP_ID_IMAGE, MGMT_OP_WRITE, IMG_MGMT_ID_UPLOAD, payload,
		    zse->payload_mut - payload);
	return read_answer();
}

/* An image-state write: "test" (@p confirm false) or "confirm" of the image whose hash is
 * @p hash; "confirm" without a hash names the running image.
 */
static struct answer state_write(const uint8_t *hash, bool confirm)
{
	uint8_t payload[64];
	zcbor_state_t zse[4];
	bool ok;

	zcbor_new_encode_state(zse, ARRAY_SIZE(zse), payload, sizeof(payload), 0);
	ok = zcbor_map_start_encode(zse, 2);
	if (hash != NULL) {
		ok = ok && zcbor_tstr_put_lit(zse, "hash") &&
		     zcbor_bstr_encode_ptr(zse, (const char *)hash, HASH_LEN);
	}
	ok = ok && zcbor_tstr_put_lit(zse, "confirm") && zcbor_bool_put(zse, confirm) &&
	     zcbor_map_end_encode(zse, 2);
	zassert_true(ok, "state write not encoded");
	smp_request(MGMT_GROUP_ID_IMAGE, MGMT_OP_WRITE, IMG_MGMT_ID_STATE, payload,
		    zse->payload_mut - payload);
	return read_answer();
}

static struct answer state_read(void)
{
	uint8_t payload[8];
	zcbor_state_t zse[2];

	zcbor_new_encode_state(zse, ARRAY_SIZE(zse), payload, sizeof(payload), 0);
	zassert_true(zcbor_map_start_encode(zse, 0) && zcbor_map_end_encode(zse, 0));
	smp_request(MGMT_GROUP_ID_IMAGE, MGMT_OP_READ, IMG_MGMT_ID_STATE, payload,
		    zse->payload_mut - payload);
	return read_answer();
}

/* --- the tests ------------------------------------------------------------------------------- */

/* DFU-1 (downgrade prevention): a first chunk whose MCUboot header is older (revision, minor
 * or major) than the running image is refused with "current version is newer", and nothing
 * reaches slot 1 nor the core.
 */
ZTEST(dfu_smp, test_dfu_1_smp_upload_of_older_image_refused)
{
	static const struct dfu_version older[] = {
		{.major = 1, .minor = 2, .revision = 2},
		{.major = 1, .minor = 1, .revision = 900},
		{.major = 0, .minor = 255, .revision = 65535},
	};

	for (size_t i = 0; i < ARRAY_SIZE(older); i++) {
		struct answer a;

		make_image(image, older[i], 0x20);
		a = upload(image, IMAGE_LEN, 0, FIRST_CHUNK, NULL);
		expect_image_error(&a, IMG_MGMT_ERR_CURRENT_VERSION_IS_NEWER, "older image");
		zassert_true(slot_erased(UPDATE_SLOT, IMAGE_LEN),
			     "%u.%u.%u written to slot 1 under 1.2.3", older[i].major,
			     older[i].minor, older[i].revision);
	}
	EXPECT_NO_EVENTS("refused uploads");
}

/* DFU-1, DFU-2: a first chunk of the running version is accepted (and written); a newer image
 * is received whole into slot 1, and the core hears it start, progress and complete.
 */
ZTEST(dfu_smp, test_dfu_1_smp_upload_of_same_or_newer_image_accepted)
{
	static const struct dfu_version newer = {.major = 1, .minor = 3, .revision = 0};
	struct answer a;

	make_image(image, running, 0x21);
	a = upload(image, IMAGE_LEN, 0, FIRST_CHUNK, NULL);
	zassert_false(a.has_err || a.has_rc, "same version refused");
	zassert_true(a.has_off && a.off == FIRST_CHUNK, "offset %zu after the first chunk", a.off);
	zassert_true(slot_holds(UPDATE_SLOT, image, CONFIG_IMG_BLOCK_BUF_SIZE),
		     "the accepted chunk is not in slot 1");
	EXPECT_EVENTS("same version", BMS_DFU_STARTED);

	clear_events();
	erase_slot(UPDATE_SLOT);
	make_image(image, newer, 0x22);
	a = upload(image, IMAGE_LEN, 0, FIRST_CHUNK, NULL);
	zassert_false(a.has_err || a.has_rc, "newer version refused");
	a = upload(image, IMAGE_LEN, FIRST_CHUNK, IMAGE_LEN - FIRST_CHUNK, NULL);
	zassert_false(a.has_err || a.has_rc, "last chunk refused");
	zassert_true(a.has_off && a.off == IMAGE_LEN, "offset %zu after the last chunk", a.off);
	zassert_true(slot_holds(UPDATE_SLOT, image, IMAGE_LEN), "slot 1 does not hold the image");
	EXPECT_EVENTS("newer version", BMS_DFU_STARTED, BMS_DFU_PROGRESS, BMS_DFU_COMPLETED);
}

/* DFU-1: a first chunk with MCUboot's magic whose sizes leave no room for the signature TLVs
 * (img_mgmt checks the magic only) is refused as an invalid header, nothing written.
 */
ZTEST(dfu_smp, test_dfu_1_smp_upload_with_inconsistent_header_refused)
{
	static const struct dfu_version newer = {.major = 1, .minor = 3, .revision = 0};
	struct answer a;

	make_image(image, newer, 0x23);
	a = upload(image, HDR_LEN + CODE_LEN, 0, FIRST_CHUNK, NULL);
	expect_image_error(&a, IMG_MGMT_ERR_INVALID_IMAGE_HEADER, "no room for the TLVs");
	zassert_true(slot_erased(UPDATE_SLOT, IMAGE_LEN), "written to slot 1");
	EXPECT_NO_EVENTS("refused upload");
}

/* DFU-1 (downgrade prevention): after an update the previous, older image stays in slot 1.
 * Neither a "test" nor a "confirm" of its hash runs (MCUboot would swap it in), so nothing is
 * set to boot; reading the image state stays allowed.
 */
ZTEST(dfu_smp, test_dfu_1_smp_state_write_refused_while_slot_1_holds_an_older_image)
{
	static const struct dfu_version previous = {.major = 1, .minor = 2, .revision = 2};
	struct answer a;

	make_image(image, previous, 0x42);
	write_slot(UPDATE_SLOT, image, IMAGE_LEN);

	a = state_write(image_hash(image), false);
	expect_image_error(&a, IMG_MGMT_ERR_CURRENT_VERSION_IS_NEWER, "test of the older image");
	zassert_equal(mcuboot_swap_type(), BOOT_SWAP_TYPE_NONE, "the older image set to boot");

	a = state_write(image_hash(image), true);
	expect_image_error(&a, IMG_MGMT_ERR_CURRENT_VERSION_IS_NEWER,
			   "confirm of the older image");
	zassert_equal(mcuboot_swap_type(), BOOT_SWAP_TYPE_NONE, "the older image set to boot");

	a = state_read();
	zassert_false(a.has_err || a.has_rc, "state read refused");
	zassert_true(a.has_images, "no image list in the state read");
}

/* DFU-1: while the running image is on test no image-state write runs: a phone can neither
 * confirm it (only the firmware's self-check does) nor set slot 1 to boot, even a newer image;
 * both are refused with "access denied" and the trailers stay as they were.
 */
ZTEST(dfu_smp, test_dfu_1_smp_state_write_refused_while_image_on_test)
{
	static const struct dfu_version newer = {.major = 1, .minor = 3, .revision = 0};
	struct answer a;

	make_image(image, newer, 0x43);
	write_slot(UPDATE_SLOT, image, IMAGE_LEN);
	running_image_on_test();

	a = state_write(NULL, true);
	zassert_true(a.has_rc && a.rc == MGMT_ERR_EACCESSDENIED,
		     "confirm of the running image on test not refused (rc %d)", a.rc);
	zassert_false(boot_is_img_confirmed(), "a phone confirmed the image on test");

	a = state_write(image_hash(image), false);
	zassert_true(a.has_rc && a.rc == MGMT_ERR_EACCESSDENIED,
		     "test of slot 1 while on test not refused (rc %d)", a.rc);
	zassert_equal(mcuboot_swap_type(), BOOT_SWAP_TYPE_REVERT, "next boot changed");
	zassert_false(boot_is_img_confirmed(), "the image on test was confirmed");

	a = state_read();
	zassert_false(a.has_err || a.has_rc, "state read refused");
}

/* DFU-1: on a confirmed image, a "test" of a newer image in slot 1 (the phone's step after its
 * upload) runs: MCUboot will swap it in at the next boot.
 */
ZTEST(dfu_smp, test_dfu_1_smp_test_of_a_newer_image_accepted)
{
	static const struct dfu_version newer = {.major = 1, .minor = 3, .revision = 0};
	struct answer a;

	make_image(image, newer, 0x44);
	write_slot(UPDATE_SLOT, image, IMAGE_LEN);

	a = state_write(image_hash(image), false);
	zassert_false(a.has_err || a.has_rc, "test of the newer image refused");
	zassert_true(a.has_images, "no image state in the answer");
	zassert_equal(mcuboot_swap_type(), BOOT_SWAP_TYPE_TEST, "slot 1 not set to boot");
}

/* DFU-2: an upload MCUmgr stops on an error (here a chunk past the announced length) is
 * "aborted" for the core, after "started".
 */
ZTEST(dfu_smp, test_dfu_2_smp_stopped_upload_aborts_update)
{
	static const struct dfu_version newer = {.major = 1, .minor = 3, .revision = 0};
	struct answer a;

	make_image(image, newer, 0x45);
	a = upload(image, IMAGE_LEN, 0, FIRST_CHUNK, NULL);
	zassert_false(a.has_err || a.has_rc, "first chunk refused");
	a = upload(image, IMAGE_LEN, FIRST_CHUNK, IMAGE_LEN - FIRST_CHUNK + 16, NULL);
	expect_image_error(&a, IMG_MGMT_ERR_INVALID_IMAGE_DATA_OVERRUN, "overrunning chunk");
	EXPECT_EVENTS("stopped upload", BMS_DFU_STARTED, BMS_DFU_ABORTED);
}

/* DFU-1, DFU-2: the uploading link drops (dfu_link.c's call on the boards): the core hears the
 * upload aborted although img_mgmt keeps it. The phone reconnects and resends its first chunk
 * with the same SHA-256: img_mgmt answers with the offset reached, the phone goes on from
 * there, the core hears the upload start again and complete, and slot 1 holds the image.
 */
ZTEST(dfu_smp, test_dfu_1_smp_dropped_link_aborts_and_resumed_upload_starts_again)
{
	static const struct dfu_version newer = {.major = 1, .minor = 3, .revision = 0};
	uint8_t sha[HASH_LEN];
	struct answer a;

	memset(sha, 0x46, sizeof(sha));
	make_image(image, newer, 0x46);
	a = upload(image, IMAGE_LEN, 0, FIRST_CHUNK, sha);
	zassert_false(a.has_err || a.has_rc, "first chunk refused");
	EXPECT_EVENTS("upload started", BMS_DFU_STARTED);

	dfu_upload_link_lost();
	EXPECT_EVENTS("link dropped", BMS_DFU_STARTED, BMS_DFU_ABORTED);

	a = upload(image, IMAGE_LEN, 0, FIRST_CHUNK, sha);
	zassert_false(a.has_err || a.has_rc, "resumed upload refused");
	zassert_true(a.has_off && a.off == FIRST_CHUNK, "resumed at %zu, not at %u", a.off,
		     FIRST_CHUNK);
	a = upload(image, IMAGE_LEN, FIRST_CHUNK, IMAGE_LEN - FIRST_CHUNK, sha);
	zassert_false(a.has_err || a.has_rc, "last chunk refused");
	zassert_true(a.has_off && a.off == IMAGE_LEN, "offset %zu after the last chunk", a.off);
	zassert_true(slot_holds(UPDATE_SLOT, image, IMAGE_LEN), "slot 1 does not hold the image");
	EXPECT_EVENTS("resumed upload", BMS_DFU_STARTED, BMS_DFU_ABORTED, BMS_DFU_STARTED,
		      BMS_DFU_COMPLETED);
}

/* SET-2: MCUmgr's reset command, the phone's last step of an update, reboots without a
 * disconnect: dfu.c's reset hook has the control thread store the records held back for the
 * flash first. (The test's own reset hook, registered after dfu.c's, refuses the reset so that
 * native_sim does not reboot; MCUmgr calls every hook, whatever the others answer.)
 */
ZTEST(dfu_smp, test_set_2_smp_reset_flushes_held_back_records)
{
	uint8_t payload[8];
	zcbor_state_t zse[2];
	struct answer a;

	atomic_set(&flushes, 0);
	zcbor_new_encode_state(zse, ARRAY_SIZE(zse), payload, sizeof(payload), 0);
	zassert_true(zcbor_map_start_encode(zse, 0) && zcbor_map_end_encode(zse, 0));
	smp_request(MGMT_GROUP_ID_OS, MGMT_OP_WRITE, OS_MGMT_ID_RESET, payload,
		    zse->payload_mut - payload);
	a = read_answer();
	zassert_true(a.has_rc && a.rc == MGMT_ERR_EBUSY, "the test's hook did not hold the reset");
	zassert_equal(atomic_get(&flushes), 1, "records flushed %ld times before the reset",
		      (long)atomic_get(&flushes));
}

static enum mgmt_cb_return hold_reset(uint32_t event, enum mgmt_cb_return prev_status,
				      int32_t *rc, uint16_t *group, bool *abort_more, void *data,
				      size_t data_size)
{
	ARG_UNUSED(event);
	ARG_UNUSED(prev_status);
	ARG_UNUSED(group);
	ARG_UNUSED(abort_more);
	ARG_UNUSED(data);
	ARG_UNUSED(data_size);

	*rc = MGMT_ERR_EBUSY;
	return MGMT_CB_ERROR_RC;
}

static struct mgmt_callback hold_reset_cb = {
	.callback = hold_reset,
	.event_id = MGMT_EVT_OP_OS_MGMT_RESET,
};

static void *setup(void)
{
	zassert_ok(dfu_init(), "dfu_init");
	mgmt_callback_register(&hold_reset_cb);
	smp_dummy_enable();
	return NULL;
}

/* Each test: slot 0 holds the confirmed running image 1.2.3 (its trailer erased: MCUboot's
 * state after a normal boot), slot 1 is erased, the core heard nothing.
 */
static void before(void *fixture)
{
	static uint8_t running_image[IMAGE_LEN];

	ARG_UNUSED(fixture);
	erase_slot(RUNNING_SLOT);
	erase_slot(UPDATE_SLOT);
	make_image(running_image, running, 0x01);
	write_slot(RUNNING_SLOT, running_image, IMAGE_LEN);
	zassert_true(boot_is_img_confirmed());
	zassert_equal(mcuboot_swap_type(), BOOT_SWAP_TYPE_NONE);
	clear_events();
}

static void after(void *fixture)
{
	ARG_UNUSED(fixture);
	if (answer_buf != NULL) {
		net_buf_unref(answer_buf);
		answer_buf = NULL;
	}
}

ZTEST_SUITE(dfu_smp, NULL, setup, before, after, NULL);
