/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * What one BLE connection keeps between its GATT requests, kept apart from the Bluetooth
 * types so that the Twister suites run it without a controller:
 *
 * - the battery selector: reads of the Battery characteristic pass the selector this
 *   connection last wrote (none = battery 0), and a selector write is kept only when the core
 *   answered Ok, so a refused one leaves the previous choice (docs/protocol.md);
 * - the page of a long read: ATT Read Blob asks again with an offset; the rest is cut from the
 *   page built at offset 0, never from a newer one, so the client reassembles one page;
 * - refused writes: the response status becomes ATT error 0x80 + status;
 * - status notifications: with read protection on, a link that is not authenticated (a
 *   guest, which may still write the Status CCC) is not sent the status page.
 */

#include <errno.h>
#include <string.h>

#include <zephyr/logging/log.h>
#include <zephyr/sys/util.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_gatt, CONFIG_BMS_LOG_LEVEL);

void gatt_session_reset(struct gatt_session *s)
{
	memset(s, 0, sizeof(*s));
}

static int response_status(const uint8_t *resp, size_t len)
{
	/* The core answers every request with [version, status, ...]. */
	if (len <= BMS_RESPONSE_STATUS_OFFSET) {
		return -EBADMSG;
	}
	return resp[BMS_RESPONSE_STATUS_OFFSET];
}

int gatt_read(struct gatt_session *s, uint8_t chr, bool authenticated, uint16_t offset,
	      const uint8_t **value, size_t *value_len)
{
	const uint8_t *req = NULL;
	size_t req_len = 0;
	size_t len = 0;
	int err;

	if (offset == 0 || s->value_chr != chr) {
		if (chr == BMS_CHR_BATTERY) {
			req = s->selector;
			req_len = s->selector_len;
		}

		s->value_chr = 0;
		err = control_gatt(chr, false, authenticated, req, req_len, s->value,
				   sizeof(s->value), &len);
		if (err) {
			return err;
		}
		err = response_status(s->value, len);
		if (err < 0) {
			return err;
		}
		s->value_chr = chr;
		s->value_len = (uint16_t)MIN(len, sizeof(s->value));
	}

	/* A refused read (status != Ok) is still a value: the client reads the status. */
	*value = s->value;
	*value_len = s->value_len;
	return 0;
}

int gatt_write(struct gatt_session *s, uint8_t chr, bool authenticated, const uint8_t *req,
	       size_t req_len, uint8_t *resp, size_t resp_cap, size_t *resp_len)
{
	int status;
	int err;

	*resp_len = 0;
	err = control_gatt(chr, true, authenticated, req, req_len, resp, resp_cap, resp_len);
	if (err) {
		return err;
	}

	status = response_status(resp, *resp_len);
	if (status < 0) {
		return status;
	}

	/* A write may change what a started long read would return: cut the next one afresh. */
	s->value_chr = 0;

	if (status != BMS_STATUS_OK) {
		LOG_INF("Write to characteristic %u refused (status %d)", chr, status);
		return APP_ATT_ERR_REFUSED(status);
	}

	if (chr == BMS_CHR_BATTERY) {
		/* The core accepts no request longer than the selector buffer. */
		if (req_len > sizeof(s->selector)) {
			LOG_ERR("Battery selector of %zu bytes not kept", req_len);
			return -ENOSPC;
		}
		memcpy(s->selector, req, req_len);
		s->selector_len = (uint8_t)req_len;
	}

	return 0;
}

bool gatt_status_notified(bool read_protection, bool authenticated)
{
	return !read_protection || authenticated;
}
