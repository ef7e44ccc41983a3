/* SPDX-License-Identifier: Apache-2.0 */
/* Copyright (c) 2026 The OpenBMS authors */

/* bms_port.h for the host tests: a small key-value store in RAM and a log-line ring. */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bms.h"
#include "bms_port.h"
#include "port_mem.h"

#define RECORDS 16
#define RECORD_BYTES 1024
#define KEY_BYTES 16
#define LOG_LINES 512
#define LOG_LINE_BYTES 128

struct record {
	char key[KEY_BYTES];
	size_t len;
	unsigned char data[RECORD_BYTES];
};

static struct record records[RECORDS];
static char log_lines[LOG_LINES][LOG_LINE_BYTES];
static int log_next;
static int log_total;
static int writes;
static bool writes_fail;
static bool reads_fail;
static struct bms *reenter_bms;
static int reentry_status = 1;
static struct bms *reenter_all_bms;
static const char *reentry_accepted;
static int reentry_calls;
static bool reentering;
static int bad_calls;

void port_mem_reset(void)
{
	memset(records, 0, sizeof(records));
	memset(log_lines, 0, sizeof(log_lines));
	log_next = 0;
	log_total = 0;
	writes = 0;
	writes_fail = false;
	reads_fail = false;
	reenter_bms = NULL;
	reentry_status = 1;
	reenter_all_bms = NULL;
	reentry_accepted = NULL;
	reentry_calls = 0;
	reentering = false;
	bad_calls = 0;
}

/* Notes the first call back that was not refused with BMS_EBUSY. */
static void reentry_check(const char *name, int status)
{
	reentry_calls++;
	if (status != BMS_EBUSY && reentry_accepted == NULL) {
		reentry_accepted = name;
	}
}

/* Every entry point of bms.h, with arguments it would accept outside a call: only the
 * overlap with the running call may refuse them. bms_close comes last: if it were accepted,
 * the calls after it would only see a closed handle.
 */
static void reenter_every_entry_point(struct bms *bms)
{
	struct bms_inputs in = {0};
	struct bms_outputs out;
	struct bms_bond_action action;
	uint8_t buf[256];
	uint8_t retained[BMS_RETAINED_LEN] = {0};
	size_t len;
	uint64_t ms;
	uint32_t key;

	reentry_check("bms_open", bms_open() == NULL ? BMS_EBUSY : BMS_OK);
	reentry_check("bms_step", bms_step(bms, 0, &in, &out));
	reentry_check("bms_feed_bus", bms_feed_bus(bms, 0, NULL, 0));
	reentry_check("bms_line_configure", bms_line_configure(bms, 0, 0, NULL, 0));
	reentry_check("bms_line_poll", bms_line_poll(bms, 0, buf, sizeof(buf), &len, &ms));
	reentry_check("bms_gatt_request", bms_gatt_request(bms, 0, BMS_CHR_STATUS, 0, 0, NULL, 0,
							   buf, sizeof(buf), &len));
	reentry_check("bms_advertisement", bms_advertisement(bms, buf, sizeof(buf), &len));
	reentry_check("bms_dfu_event", bms_dfu_event(bms, 0, BMS_DFU_STARTED));
	reentry_check("bms_self_check", bms_self_check(bms, 0, 1, 1));
	reentry_check("bms_next_deadline_ms", bms_next_deadline_ms(bms, &ms));
	reentry_check("bms_passkey", bms_passkey(bms, &key));
	reentry_check("bms_button", bms_button(bms, 0, 0));
	reentry_check("bms_pairing_result", bms_pairing_result(bms, 0, 0));
	reentry_check("bms_bonds_set", bms_bonds_set(bms, NULL, 0));
	reentry_check("bms_bond_action", bms_bond_action(bms, &action));
	reentry_check("bms_flush", bms_flush(bms, 0));
	reentry_check("bms_device_name", bms_device_name(bms, buf, sizeof(buf), &len));
	reentry_check("bms_set_log_level", bms_set_log_level(4));
	reentry_check("bms_set_warm_restart",
		      bms_set_warm_restart(retained, sizeof(retained), 0));
	reentry_check("bms_retained", bms_retained(bms, buf, sizeof(buf), &len));
	reentry_check("bms_set_readout_product_id", bms_set_readout_product_id(0xA3EC));
	reentry_check("bms_close", bms_close(bms));
}

static struct record *find(const char *key)
{
	for (int i = 0; i < RECORDS; i++) {
		if (records[i].key[0] != '\0' && strcmp(records[i].key, key) == 0) {
			return &records[i];
		}
	}
	return NULL;
}

static bool key_ok(const char *key)
{
	bool ok = key != NULL && key[0] != '\0' && strlen(key) < KEY_BYTES;

	bad_calls += ok ? 0 : 1;
	return ok;
}

int bms_port_storage_read(const char *key, uint8_t *buf, size_t cap, size_t *len)
{
	if (!key_ok(key) || len == NULL || (buf == NULL && cap > 0)) {
		return -EINVAL;
	}
	if (reads_fail) {
		return -EIO;
	}
	const struct record *r = find(key);
	if (r == NULL) {
		return -ENOENT;
	}
	if (r->len > cap) {
		return -ENOSPC;
	}
	memcpy(buf, r->data, r->len);
	*len = r->len;
	return 0;
}

int bms_port_storage_write(const char *key, const uint8_t *buf, size_t len)
{
	if (!key_ok(key) || (buf == NULL && len > 0) || len > RECORD_BYTES) {
		return -EINVAL;
	}
	if (writes_fail) {
		return -EIO;
	}
	struct record *r = find(key);
	for (int i = 0; r == NULL && i < RECORDS; i++) {
		if (records[i].key[0] == '\0') {
			r = &records[i];
			strcpy(r->key, key);
		}
	}
	if (r == NULL) {
		return -EIO;
	}
	memcpy(r->data, buf, len);
	r->len = len;
	writes++;
	return 0;
}

int bms_port_storage_delete(const char *key)
{
	if (!key_ok(key)) {
		return -EINVAL;
	}
	struct record *r = find(key);
	if (r != NULL) {
		memset(r, 0, sizeof(*r));
	}
	return 0;
}

/* bms_port_random(): port_random.c (shared with twister-tests/stack). */

void bms_port_log(uint8_t level, const char *msg, size_t len)
{
	/* The library promises: a level of 1..5 and a short, valid, unterminated text. */
	if (level < 1 || level > 5 || msg == NULL || len >= LOG_LINE_BYTES - 4) {
		fprintf(stderr, "bms_port_log: bad call (level %u, len %zu)\n", level, len);
		bad_calls++;
		return;
	}
	if (reenter_bms != NULL) {
		uint64_t deadline;

		reentry_status = bms_next_deadline_ms(reenter_bms, &deadline);
	}
	/* Not from the lines the calls back log themselves (were they accepted). */
	if (reenter_all_bms != NULL && !reentering) {
		reentering = true;
		reenter_every_entry_point(reenter_all_bms);
		reentering = false;
	}
	snprintf(log_lines[log_next], LOG_LINE_BYTES, "<%u> %.*s", level, (int)len, msg);
	log_next = (log_next + 1) % LOG_LINES;
	log_total++;
}

int port_mem_log_count(const char *needle)
{
	int n = 0;
	for (int i = 0; i < LOG_LINES; i++) {
		if (log_lines[i][0] != '\0' && strstr(log_lines[i], needle) != NULL) {
			n++;
		}
	}
	return n;
}

void port_mem_log_dump(void)
{
	int kept = log_total < LOG_LINES ? log_total : LOG_LINES;
	for (int i = 0; i < kept; i++) {
		printf("    log: %s\n", log_lines[(log_next - kept + i + LOG_LINES) % LOG_LINES]);
	}
}

int port_mem_writes(void)
{
	return writes;
}

void port_mem_fail_writes(bool fail)
{
	writes_fail = fail;
}

void port_mem_reenter(struct bms *bms)
{
	reenter_bms = bms;
}

int port_mem_reentry_status(void)
{
	return reentry_status;
}

void port_mem_reenter_all(struct bms *bms)
{
	reenter_all_bms = bms;
}

const char *port_mem_reentry_accepted(void)
{
	return reentry_accepted;
}

int port_mem_reentry_calls(void)
{
	return reentry_calls;
}

int port_mem_bad_calls(void)
{
	return bad_calls;
}

void port_mem_fail_reads(bool fail)
{
	reads_fail = fail;
}

bool port_mem_flip_bit(const char *key, size_t bit)
{
	struct record *r = find(key);

	if (r == NULL || bit / 8 >= r->len) {
		return false;
	}
	r->data[bit / 8] ^= (unsigned char)(1u << (bit % 8));
	return true;
}

bool port_mem_get(const char *key, unsigned char *buf, size_t cap, size_t *len)
{
	const struct record *r = find(key);

	if (r == NULL || r->len > cap) {
		return false;
	}
	memcpy(buf, r->data, r->len);
	*len = r->len;
	return true;
}
