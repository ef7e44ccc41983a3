/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The platform side of bms_port.h: the core's records stored with Zephyr's settings subsystem
 * on the ZMS backend, one settings entry per record. Any key the core names is stored as it
 * is ("bms/settings", "bms/soc", "bms/point", "bms/hist", "bms/hpt", "bms/hcnt", "bms/nonce",
 * "bms/secrets", "bms/learn", "bms/name", and whatever it adds later): nothing here lists them. The bytes are opaque here: version and
 * CRC are the core's (SET-3). Direct-load pattern of samples/subsys/settings.
 */

#include <errno.h>
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/settings/settings.h>
#include <zephyr/sys/util.h>

#include <bms_port.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_storage, CONFIG_BMS_LOG_LEVEL);

/* Reads of a record that fail with an I/O error; the control thread's watchdog period
 * (at least 200 ms, CONFIG_BMS_CONTROL_WDT_MS) covers them all.
 */
#define STORAGE_READ_ATTEMPTS 3
#define STORAGE_READ_RETRY_DELAY K_MSEC(10)

struct read_ctx {
	uint8_t *buf;
	size_t cap;
	size_t len;
	int rc;
};

static int load_record(const char *key, size_t len, settings_read_cb read_cb, void *cb_arg,
		       void *param)
{
	struct read_ctx *ctx = param;
	const char *next;
	ssize_t n;

	/* Only the record itself, not records below it ("bms/x" vs "bms/x/y"): @p key is the
	 * rest of the name after the subtree, NULL or empty for the record itself.
	 */
	if (settings_name_next(key, &next) != 0 || next != NULL) {
		return 0;
	}

	if (len > ctx->cap) {
		ctx->rc = -ENOSPC;
		return 0;
	}

	n = read_cb(cb_arg, ctx->buf, len);
	if (n < 0 || (size_t)n != len) {
		ctx->rc = -EIO;
		return 0;
	}

	ctx->len = len;
	ctx->rc = 0;
	return 0;
}

static bool key_valid(const char *key)
{
	/* memchr, not POSIX strnlen (not declared by ISO C libraries such as picolibc). */
	return key != NULL && key[0] != '\0' && memchr(key, '\0', BMS_STORAGE_KEY_MAX_LEN + 1) != NULL;
}

static int read_once(const char *key, struct read_ctx *ctx)
{
	int err;

	ctx->rc = -ENOENT;
	ctx->len = 0;
	err = settings_load_subtree_direct(key, load_record, ctx);
	if (err) {
		LOG_ERR("Record %s not loaded (err %d)", key, err);
		return -EIO;
	}
	return ctx->rc;
}

int bms_port_storage_read(const char *key, uint8_t *buf, size_t cap, size_t *len)
{
	struct read_ctx ctx = {.buf = buf, .cap = cap};
	int rc;

	if (!key_valid(key) || buf == NULL || len == NULL) {
		return -EINVAL;
	}

	/* A read error may pass (a disturbed flash read): read again before the core takes the
	 * record for lost, which for the secrets record means pairing refused until a reset.
	 */
	rc = read_once(key, &ctx);
	for (int retry = 1; rc == -EIO && retry < STORAGE_READ_ATTEMPTS; retry++) {
		LOG_WRN("Record %s: read error, attempt %d of %d", key, retry + 1,
			STORAGE_READ_ATTEMPTS);
		k_sleep(STORAGE_READ_RETRY_DELAY);
		rc = read_once(key, &ctx);
	}

	if (rc == 0) {
		*len = ctx.len;
	}

	return rc;
}

int bms_port_storage_write(const char *key, const uint8_t *buf, size_t len)
{
	int err;

	if (!key_valid(key) || (buf == NULL && len > 0)) {
		return -EINVAL;
	}

	err = settings_save_one(key, buf, len);
	if (err) {
		LOG_ERR("Record %s not saved (err %d)", key, err);
		return -EIO;
	}

	return 0;
}

int bms_port_storage_delete(const char *key)
{
	int err;

	if (!key_valid(key)) {
		return -EINVAL;
	}

	err = settings_delete(key);
	if (err && err != -ENOENT) {
		LOG_ERR("Record %s not deleted (err %d)", key, err);
		return -EIO;
	}

	return 0;
}

int storage_init(void)
{
	int err;

	err = settings_subsys_init();
	if (err) {
		LOG_ERR("Settings init failed (err %d)", err);
		return err;
	}

	return 0;
}
