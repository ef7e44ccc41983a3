/* SPDX-License-Identifier: Apache-2.0 */
/* Copyright (c) 2026 The OpenBMS authors */

/*
 * The C test harness of bms-ffi: drives the library only through bms.h, with bms_port.h
 * implemented in port_mem.c, the way the Zephyr application does. Run by
 * rust/bms-ffi/tests/c_harness.rs (natively and under valgrind). Exit status 0 = all passed.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bms.h"
#include "fixtures.h"
#include "port_mem.h"

/* The C compiler's view of the structs is the Rust one (abi.rs asserts the same sizes). */
_Static_assert(sizeof(struct bms_inputs) == 16, "struct bms_inputs layout");
_Static_assert(sizeof(struct bms_outputs) == 32, "struct bms_outputs layout");
_Static_assert(sizeof(bms_led) == 1 && sizeof(bms_dfu_t) == 1, "enum types are bytes");

static int checks_failed;

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			checks_failed++;                                                         \
			printf("  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
		}                                                                                \
	} while (0)

#define CHECK_EQ(a, b)                                                                           \
	do {                                                                                     \
		long long a_ = (long long)(a), b_ = (long long)(b);                              \
		if (a_ != b_) {                                                                  \
			checks_failed++;                                                         \
			printf("  FAIL %s:%d: %s == %s (%lld != %lld)\n", __FILE__, __LINE__, #a, \
			       #b, a_, b_);                                                      \
		}                                                                                \
	} while (0)

#define BIT(reason) (1u << (reason))

/* The control loop of the application, with simulated time: steps every 100 ms and feeds the
 * current bus frames once a second, in small chunks as a UART would deliver them. */
struct loop {
	struct bms *bms;
	uint64_t now_ms;
	struct bms_inputs in;
	struct bms_outputs out;
	const uint8_t *frames;
	size_t frames_len;
	int reports;
};

static void loop_start(struct loop *l, struct bms *bms, uint32_t supply_mv)
{
	memset(l, 0, sizeof(*l));
	l->bms = bms;
	/* Remote L pulled to battery minus: remote ON (PROT-8). */
	l->in.remote_h_mv = 0;
	l->in.remote_l_mv = 0;
	l->in.supply_mv = supply_mv;
}

static void loop_feed(struct loop *l)
{
	const size_t chunk = 7;

	for (size_t at = 0; at < l->frames_len; at += chunk) {
		size_t n = l->frames_len - at < chunk ? l->frames_len - at : chunk;
		int32_t rc = bms_feed_bus(l->bms, l->now_ms, l->frames + at, n);

		CHECK(rc >= 0);
		l->reports += rc > 0 ? rc : 0;
	}
}

/* Runs the loop until @p until_ms (inclusive), one 100 ms tick at a time. */
static void loop_run(struct loop *l, uint64_t until_ms)
{
	while (l->now_ms <= until_ms) {
		if (l->frames != NULL && l->now_ms % 1000 == 0) {
			loop_feed(l);
		}
		CHECK_EQ(bms_step(l->bms, l->now_ms, &l->in, &l->out), BMS_OK);
		l->now_ms += 100;
	}
}

static void loop_frames(struct loop *l, const uint8_t *frames, size_t len)
{
	l->frames = frames;
	l->frames_len = len;
}

/* PROT-1, LED-1, and the argument checks of every function. */
static void scenario_startup(void)
{
	struct bms *bms = bms_open();
	struct bms_inputs in = { .supply_mv = FIXTURE_BANK2_SUPPLY_MV };
	struct bms_outputs out;
	uint64_t deadline = 0;

	CHECK(bms != NULL);
	CHECK(bms_open() == NULL); /* one instance */
	CHECK(port_mem_log_count("open") >= 1);

	/* PROT-1: no battery data yet, so every output is free-floating. */
	CHECK_EQ(bms_step(bms, 0, &in, &out), BMS_OK);
	CHECK(!out.atd);
	CHECK(!out.atc);
	CHECK(!out.prealarm);
	CHECK(out.atd_reasons & BIT(BMS_REASON_NO_VALID_DATA));
	CHECK(out.atc_reasons & BIT(BMS_REASON_NO_VALID_DATA));
	CHECK_EQ(out.tick_ms, 100);
	/* LED-1: blue blinks with no app connected, is solid with one. */
	CHECK_EQ(out.led_blue, BMS_LED_BLINK);
	in.app_connected = true;
	CHECK_EQ(bms_step(bms, 100, &in, &out), BMS_OK);
	CHECK_EQ(out.led_blue, BMS_LED_SOLID);

	CHECK_EQ(bms_next_deadline_ms(bms, &deadline), BMS_OK);
	CHECK(deadline > 100 && deadline <= 200);

	/* Bad arguments give an error status and change nothing. */
	struct bms_outputs before;

	memset(&out, 0xa5, sizeof(out));
	memcpy(&before, &out, sizeof(out));
	CHECK_EQ(bms_step(NULL, 200, &in, &out), BMS_EINVAL);
	CHECK_EQ(bms_step(bms, 200, NULL, &out), BMS_EINVAL);
	CHECK_EQ(bms_step(bms, 200, &in, NULL), BMS_EINVAL);
	CHECK_EQ(bms_step((struct bms *)((uintptr_t)bms + 8), 200, &in, &out), BMS_EINVAL);
	CHECK_EQ(bms_step(bms, 200, &in, (struct bms_outputs *)((uintptr_t)&out + 1)), BMS_EINVAL);
	CHECK(memcmp(&before, &out, sizeof(out)) == 0);
	CHECK_EQ(bms_next_deadline_ms(bms, NULL), BMS_EINVAL);
	CHECK_EQ(bms_next_deadline_ms(NULL, &deadline), BMS_EINVAL);
	CHECK_EQ(bms_dfu_event(bms, 200, 200), BMS_EINVAL);
	CHECK_EQ(bms_dfu_event(NULL, 200, BMS_DFU_STARTED), BMS_EINVAL);
	CHECK_EQ(bms_feed_bus(bms, 200, NULL, 5), BMS_EINVAL);
	CHECK_EQ(bms_feed_bus(bms, 200, NULL, 0), 0);
	CHECK_EQ(bms_feed_bus(NULL, 200, fixture_bank2_ok, sizeof(fixture_bank2_ok)), BMS_EINVAL);
	CHECK_EQ(bms_close(NULL), BMS_EINVAL);

	/* A call from inside a library call (here from bms_port_log) is refused, not run. */
	port_mem_reenter(bms);
	CHECK_EQ(bms_dfu_event(bms, 200, BMS_DFU_STARTED), BMS_OK);
	port_mem_reenter(NULL);
	CHECK_EQ(port_mem_reentry_status(), BMS_EBUSY);
	CHECK_EQ(bms_next_deadline_ms(bms, &deadline), BMS_OK);

	/* Close, then the handle is dead until the next open. */
	CHECK_EQ(bms_close(bms), BMS_OK);
	CHECK_EQ(bms_close(bms), BMS_EINVAL);
	CHECK_EQ(bms_step(bms, 300, &in, &out), BMS_EINVAL);
	struct bms *again = bms_open();

	CHECK(again == bms);
	CHECK_EQ(bms_close(again), BMS_OK);
}

/* PROT-1, PROT-3, PROT-2, PROT-11: a healthy bank, then a cell sags below the pre-alarm level
 * and below 2.80 V; the pre-alarm comes first, ATD follows 30 s later, and both return. */
static void scenario_undervoltage_with_prealarm(void)
{
	struct loop l;

	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	CHECK(l.bms != NULL);

	/* PROT-1: outputs come up once complete, valid data arrived. */
	loop_frames(&l, fixture_bank2_ok, sizeof(fixture_bank2_ok));
	loop_run(&l, 3000);
	CHECK(l.reports >= 2);
	CHECK(l.out.atd);
	CHECK(l.out.atc);
	CHECK(!l.out.prealarm);
	CHECK_EQ(l.out.atd_reasons, 0);

	/* A cell at 2.75 V from t = 4 s: pre-alarm after the 5 s debounce (PROT-3), ATD still on. */
	loop_frames(&l, fixture_bank2_undervoltage, sizeof(fixture_bank2_undervoltage));
	loop_run(&l, 8500);
	CHECK(!l.out.prealarm);
	loop_run(&l, 9500);
	CHECK(l.out.prealarm);
	CHECK(l.out.prealarm_reasons & BIT(BMS_REASON_PREALARM_LEVEL));
	CHECK(l.out.atd);

	/* PROT-2: ATD only after the pre-alarm has been active for 30 s. */
	loop_run(&l, 38500);
	CHECK(l.out.atd);
	loop_run(&l, 40000);
	CHECK(!l.out.atd);
	CHECK(l.out.atd_reasons & BIT(BMS_REASON_CELL_UNDERVOLTAGE));
	CHECK(l.out.atc);
	/* PROT-11: the change was logged with its reason, on one line (by the core). */
	CHECK(port_mem_log_count("atd free-floating: cell_undervoltage") >= 1);

	/* All cells >= 3.20 V again: ATD returns; the pre-alarm clears after 10 s above 3.15 V. */
	loop_frames(&l, fixture_bank2_recovered, sizeof(fixture_bank2_recovered));
	loop_run(&l, 42000);
	CHECK(l.out.atd);
	loop_run(&l, 54000);
	CHECK(!l.out.prealarm);

	CHECK_EQ(bms_close(l.bms), BMS_OK);
}

/* Protocol constants of docs/protocol.md, as a GATT client sees them. */
#define PROTO_VERSION 1
#define CHR_STATUS 1
#define CHR_BANK 2
#define CHR_SETTINGS 5
#define CHR_CONTROL_POINT 6
#define CHR_DEVICE_NAME 7
#define STATUS_OK 0
#define STATUS_NOT_AUTHENTICATED 6
#define STATUS_INVALID_VALUE 7
#define STATUS_UNKNOWN_CHARACTERISTIC 10
#define CMD_CHANGE_PASSKEY 4
#define CMD_READ_ADVERTISEMENT_KEY 5

static size_t gatt(struct bms *bms, uint64_t now_ms, uint8_t chr, bool write, bool auth,
		   const uint8_t *req, size_t req_len, uint8_t *resp)
{
	size_t len = 0;

	CHECK_EQ(bms_gatt_request(bms, now_ms, chr, write, auth, req, req_len, resp,
				  BMS_GATT_RESPONSE_MAX, &len),
		 BMS_OK);
	CHECK(len >= 2 && len <= BMS_GATT_RESPONSE_MAX);
	CHECK_EQ(resp[0], PROTO_VERSION);
	return len;
}

/* BLE-1, BLE-2, BLE-4: pages are readable by anyone, actions need an authenticated link, bad
 * requests get an error response; a changed passkey and device name survive a restart (through
 * bms_port). */
static void scenario_gatt_read(void)
{
	static uint8_t resp[BMS_GATT_RESPONSE_MAX];
	const uint8_t read_key[] = { PROTO_VERSION, CMD_READ_ADVERTISEMENT_KEY };
	/* 123456 as a varint. */
	const uint8_t change_passkey[] = { PROTO_VERSION, CMD_CHANGE_PASSKEY, 0xc0, 0xc4, 0x07 };
	const uint8_t rename[] = { PROTO_VERSION, 6, 'B', 'o', 'a', 't', ' ', '2' };
	uint8_t name[BMS_DEVICE_NAME_MAX + 1];
	struct loop l;
	size_t len = 0;
	uint32_t passkey = 1;

	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	loop_frames(&l, fixture_bank2_ok, sizeof(fixture_bank2_ok));
	loop_run(&l, 3000);

	len = gatt(l.bms, 3100, CHR_STATUS, false, false, NULL, 0, resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK(len > 10);
	gatt(l.bms, 3100, CHR_BANK, false, false, NULL, 0, resp);
	CHECK_EQ(resp[1], STATUS_OK);

	/* BLE-4: an unknown characteristic gets an error response. */
	len = gatt(l.bms, 3100, 99, false, false, NULL, 0, resp);
	CHECK_EQ(resp[1], STATUS_UNKNOWN_CHARACTERISTIC);
	CHECK_EQ(len, 2);

	/* BLE-2: the key only over an authenticated link. */
	gatt(l.bms, 3100, CHR_CONTROL_POINT, true, false, read_key, sizeof(read_key), resp);
	CHECK_EQ(resp[1], STATUS_NOT_AUTHENTICATED);
	len = gatt(l.bms, 3100, CHR_CONTROL_POINT, true, true, read_key, sizeof(read_key), resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK_EQ(len, 2 + 16);

	CHECK_EQ(bms_passkey(l.bms, &passkey), BMS_OK);
	/* BLE-2: the unit's own passkey from the random source, never 000000. */
	CHECK(passkey >= 1 && passkey <= BMS_PASSKEY_MAX);
	gatt(l.bms, 3200, CHR_CONTROL_POINT, true, true, change_passkey, sizeof(change_passkey),
	     resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK_EQ(bms_passkey(l.bms, &passkey), BMS_OK);
	CHECK_EQ(passkey, 123456);

	/* BLE-1: the device name, "OpenBMS" until renamed over an authenticated link. */
	CHECK_EQ(bms_device_name(l.bms, name, sizeof(name), &len), BMS_OK);
	CHECK_EQ(len, 7);
	CHECK(strcmp((const char *)name, "OpenBMS") == 0);
	gatt(l.bms, 3200, CHR_DEVICE_NAME, true, false, rename, sizeof(rename), resp);
	CHECK_EQ(resp[1], STATUS_NOT_AUTHENTICATED);
	gatt(l.bms, 3200, CHR_DEVICE_NAME, true, true, rename, sizeof(rename), resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK_EQ(bms_device_name(l.bms, name, sizeof(name), &len), BMS_OK);
	CHECK_EQ(len, 6);
	CHECK(strcmp((const char *)name, "Boat 2") == 0);
	CHECK_EQ(bms_device_name(l.bms, name, BMS_DEVICE_NAME_MAX, &len), BMS_ENOSPC);
	CHECK_EQ(bms_device_name(l.bms, name, sizeof(name), NULL), BMS_EINVAL);

	/* Caller errors: short buffer, overlapping buffers, missing length pointer. */
	CHECK_EQ(bms_gatt_request(l.bms, 3300, CHR_STATUS, false, false, NULL, 0, resp, 100, &len),
		 BMS_ENOSPC);
	CHECK_EQ(bms_gatt_request(l.bms, 3300, CHR_CONTROL_POINT, true, true, resp, 2, resp,
				  sizeof(resp), &len),
		 BMS_EINVAL);
	CHECK_EQ(bms_gatt_request(l.bms, 3300, CHR_STATUS, false, false, NULL, 0, resp,
				  sizeof(resp), NULL),
		 BMS_EINVAL);
	/* The length pointer inside the response buffer (found by the FFI fuzz target: the
	 * length overwrote the response's first bytes); the buffer stays as it was. */
	static uint8_t big[BMS_GATT_RESPONSE_MAX + 16] __attribute__((aligned(8)));

	memset(big, 0xa5, sizeof(big));
	CHECK_EQ(bms_gatt_request(l.bms, 3300, CHR_STATUS, false, false, NULL, 0, big,
				  BMS_GATT_RESPONSE_MAX + 8, (size_t *)(void *)big),
		 BMS_EINVAL);
	CHECK_EQ(big[0], 0xa5);
	CHECK_EQ(bms_gatt_request(l.bms, 3300, CHR_CONTROL_POINT, true, true, big, 2, big + 8,
				  BMS_GATT_RESPONSE_MAX, (size_t *)(void *)big),
		 BMS_EINVAL);

	/* The passkey was stored through bms_port_storage_write: a restart keeps it. */
	CHECK_EQ(bms_close(l.bms), BMS_OK);
	struct bms *bms = bms_open();

	CHECK(bms != NULL);
	CHECK_EQ(bms_passkey(bms, &passkey), BMS_OK);
	CHECK_EQ(passkey, 123456);
	CHECK_EQ(bms_device_name(bms, name, sizeof(name), &len), BMS_OK);
	CHECK(strcmp((const char *)name, "Boat 2") == 0);
	CHECK_EQ(bms_close(bms), BMS_OK);
}

/* SET-1, SET-2: a settings write over GATT is validated as a whole, stored through
 * bms_port_storage_write before the call returns, and restored by the next bms_open. */
static void scenario_settings_persist(void)
{
	static uint8_t resp[BMS_GATT_RESPONSE_MAX];
	uint8_t req[32];
	size_t len;
	struct bms *bms = bms_open();

	/* The body is the postcard Settings; its first field is charged_cell_mv (varint). */
	len = gatt(bms, 0, CHR_SETTINGS, false, false, NULL, 0, resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK(len > 4 && len - 1 <= sizeof(req));
	CHECK_EQ(resp[2], 0xac); /* 3500 mV, the default */
	CHECK_EQ(resp[3], 0x1b);
	req[0] = PROTO_VERSION;
	memcpy(&req[1], &resp[2], len - 2);

	/* 4000 mV is out of range: refused, nothing changes (SET-1). */
	req[1] = 0xa0;
	req[2] = 0x1f;
	gatt(bms, 100, CHR_SETTINGS, true, true, req, len - 1, resp);
	CHECK_EQ(resp[1], STATUS_INVALID_VALUE);
	/* Unauthenticated: refused (BLE-2). */
	req[1] = 0xde; /* 3550 mV */
	req[2] = 0x1b;
	gatt(bms, 100, CHR_SETTINGS, true, false, req, len - 1, resp);
	CHECK_EQ(resp[1], STATUS_NOT_AUTHENTICATED);
	int writes = port_mem_writes();

	gatt(bms, 200, CHR_SETTINGS, true, true, req, len - 1, resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK(port_mem_writes() > writes);

	/* SET-2: a restart restores them exactly. */
	CHECK_EQ(bms_close(bms), BMS_OK);
	bms = bms_open();
	CHECK(bms != NULL);
	gatt(bms, 0, CHR_SETTINGS, false, false, NULL, 0, resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK(memcmp(&resp[2], &req[1], len - 2) == 0);
	CHECK_EQ(bms_close(bms), BMS_OK);
}

/* BLE-3: the Instant Readout manufacturer data: Victron's company id, the product
 * advertisement byte, the product id set before bms_open, record type 0x0A, the first key byte,
 * and a new nonce when values change. */
static void scenario_advertisement(void)
{
	static uint8_t resp[BMS_GATT_RESPONSE_MAX];
	const uint8_t read_key[] = { PROTO_VERSION, CMD_READ_ADVERTISEMENT_KEY };
	uint8_t adv[BMS_ADVERTISEMENT_LEN + 4];
	uint8_t again[BMS_ADVERTISEMENT_LEN];
	size_t len = 0;
	struct loop l;

	/* No product and erased flash are refused; the id in force stays the default 0xA3EC. */
	CHECK_EQ(bms_set_readout_product_id(0x0000), BMS_EINVAL);
	CHECK_EQ(bms_set_readout_product_id(0xffff), BMS_EINVAL);
	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	/* No packet before a step has stored the first nonce reservation, and the refusal leaves
	 * the buffer as it was (found by the FFI fuzz target: the company id was written). */
	memset(adv, 0xa5, sizeof(adv));
	CHECK_EQ(bms_advertisement(l.bms, adv, sizeof(adv), &len), BMS_EAGAIN);
	CHECK_EQ(adv[0], 0xa5);
	CHECK_EQ(adv[1], 0xa5);
	loop_run(&l, 1000);
	CHECK_EQ(bms_advertisement(l.bms, adv, sizeof(adv), &len), BMS_OK);
	CHECK_EQ(adv[4], 0xec);
	CHECK_EQ(adv[5], 0xa3);
	CHECK_EQ(bms_close(l.bms), BMS_OK);

	CHECK_EQ(bms_set_readout_product_id(0xa3e9), BMS_OK);
	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	CHECK_EQ(bms_set_readout_product_id(0xa3ec), BMS_OK); /* for the next open only */
	loop_frames(&l, fixture_bank2_ok, sizeof(fixture_bank2_ok));
	loop_run(&l, 3000);

	CHECK_EQ(bms_advertisement(l.bms, adv, sizeof(adv), &len), BMS_OK);
	CHECK_EQ(len, BMS_ADVERTISEMENT_LEN);
	CHECK_EQ(adv[0], 0xe1); /* company id 0x02e1, little-endian */
	CHECK_EQ(adv[1], 0x02);
	CHECK_EQ(adv[2], 0x10); /* product advertisement */
	CHECK_EQ(adv[4], 0xe9); /* product id 0xA3E9, little-endian */
	CHECK_EQ(adv[5], 0xa3);
	CHECK_EQ(adv[6], 0x0a); /* record type: BMS */
	gatt(l.bms, 3100, CHR_CONTROL_POINT, true, true, read_key, sizeof(read_key), resp);
	CHECK_EQ(adv[9], resp[2]); /* first byte of the key */

	/* The same state gives the same packet; changed values a new nonce (bytes 7, 8). */
	CHECK_EQ(bms_advertisement(l.bms, again, sizeof(again), &len), BMS_OK);
	CHECK(memcmp(adv, again, BMS_ADVERTISEMENT_LEN) == 0);
	loop_frames(&l, fixture_bank2_undervoltage, sizeof(fixture_bank2_undervoltage));
	loop_run(&l, 12000);
	CHECK(l.out.prealarm);
	CHECK_EQ(bms_advertisement(l.bms, again, sizeof(again), &len), BMS_OK);
	CHECK(adv[7] != again[7] || adv[8] != again[8]);

	CHECK_EQ(bms_advertisement(l.bms, again, BMS_ADVERTISEMENT_LEN - 1, &len), BMS_ENOSPC);
	CHECK_EQ(bms_advertisement(l.bms, again, sizeof(again), NULL), BMS_EINVAL);
	CHECK_EQ(bms_advertisement(l.bms, NULL, 26, &len), BMS_EINVAL);
	CHECK_EQ(bms_close(l.bms), BMS_OK);
}

/* A 4-cell JBD pack at 3300 mV a cell answering @p request (a JBD read request) into
 * @p out, as the pack's protocol document says; returns the answer's length, 0 for none. */
static size_t jbd_answer(const uint8_t *request, size_t len, uint8_t *out)
{
	static const uint8_t basic[] = {
		0x05, 0x28, 0x00, 0x00, 0x13, 0x88, 0x27, 0x10, 0x00, 0x00, 0x2C, 0x2A, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x10, 50,   0x03, 4,    2,    0x0B, 0xA5, 0x0B, 0xA5,
	};
	static const uint8_t cells[] = {0x0C, 0xE4, 0x0C, 0xE4, 0x0C, 0xE4, 0x0C, 0xE4};
	const uint8_t *data;
	size_t data_len;
	uint16_t sum = 0;

	if (len != 7 || request[0] != 0xDD || request[1] != 0xA5 || request[6] != 0x77) {
		return 0;
	}
	switch (request[2]) {
	case 0x03:
		data = basic;
		data_len = sizeof(basic);
		break;
	case 0x04:
		data = cells;
		data_len = sizeof(cells);
		break;
	default:
		return 0;
	}
	out[0] = 0xDD;
	out[1] = request[2];
	out[2] = 0x00;
	out[3] = (uint8_t)data_len;
	memcpy(&out[4], data, data_len);
	for (size_t i = 2; i < 4 + data_len; i++) {
		sum += out[i];
	}
	sum = (uint16_t)(0x10000u - sum);
	out[4 + data_len] = (uint8_t)(sum >> 8);
	out[5 + data_len] = (uint8_t)sum;
	out[6 + data_len] = 0x77;
	return 7 + data_len;
}

/* BANK-4 and PROT-1 on a JBD line through the C interface: the configuration is checked, the
 * core asks for registers 0x03 and 0x04, the pack's answers make it a bank member that
 * drives the outputs, and when it falls silent it is lost 5 s after its last report. */
static void scenario_jbd_line(void)
{
	static const uint8_t daly16[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	static const uint8_t twice[] = {3, 3};
	struct loop l;
	uint8_t tx[BMS_LINE_REQUEST_MAX];
	uint8_t answer[64];
	size_t len = 99;
	uint64_t next = 0;
	uint64_t last_report_ms = 0;
	uint64_t lost_ms = 0;
	bool answering = true;
	int reports = 0;

	loop_start(&l, bms_open(), 4 * 3300);
	CHECK(l.bms != NULL);

	/* Until configured, the line is the OpenBMS bus: nothing to send, ever. */
	CHECK_EQ(bms_line_poll(l.bms, 0, tx, sizeof(tx), &len, &next), BMS_OK);
	CHECK_EQ(len, 0);
	CHECK(next == BMS_NO_DEADLINE);

	/* Refused lines change nothing and say why in the log. */
	CHECK_EQ(bms_line_configure(l.bms, 9, 9600, NULL, 1), BMS_EINVAL);
	CHECK_EQ(bms_line_configure(l.bms, BMS_PROTOCOL_DALY, 9600, NULL, 17), BMS_EINVAL);
	CHECK_EQ(bms_line_configure(l.bms, BMS_PROTOCOL_DALY, 9600, twice, 2), BMS_EINVAL);
	CHECK(port_mem_log_count("pack address 3 given twice") >= 1);
	CHECK_EQ(bms_line_configure(l.bms, BMS_PROTOCOL_DALY, 9600, daly16, 16), BMS_EINVAL);
	CHECK(port_mem_log_count("16 daly packs at 9600 bit/s need") >= 1);
	CHECK_EQ(bms_line_configure(l.bms, BMS_PROTOCOL_JK, 115200, NULL, 16), BMS_EINVAL);
	CHECK_EQ(bms_line_configure(NULL, BMS_PROTOCOL_JBD, 9600, NULL, 1), BMS_EINVAL);
	CHECK_EQ(bms_line_poll(l.bms, 0, tx, sizeof(tx), &len, &next), BMS_OK);
	CHECK_EQ(len, 0);
	CHECK_EQ(bms_line_poll(l.bms, 0, tx, BMS_LINE_REQUEST_MAX - 1, &len, &next), BMS_ENOSPC);
	CHECK_EQ(bms_line_poll(l.bms, 0, tx, sizeof(tx), NULL, &next), BMS_EINVAL);
	CHECK_EQ(bms_line_poll(l.bms, 0, tx, sizeof(tx), &len, NULL), BMS_EINVAL);

	/* "Scan 1..1": the one JBD pack of this line. */
	CHECK_EQ(bms_line_configure(l.bms, BMS_PROTOCOL_JBD, 9600, NULL, 1), BMS_OK);
	CHECK(port_mem_log_count("battery line: jbd at 9600 bit/s, 1 packs") >= 1);

	/* The first request is the protocol document's "read basic information". */
	CHECK_EQ(bms_line_poll(l.bms, 0, tx, sizeof(tx), &len, &next), BMS_OK);
	CHECK_EQ(len, 7);
	static const uint8_t read_basic[] = {0xDD, 0xA5, 0x03, 0x00, 0xFF, 0xFD, 0x77};
	CHECK(memcmp(tx, read_basic, sizeof(read_basic)) == 0);
	CHECK(next > 0 && next <= 200);

	/* The loop of app/src/control.c: poll the line at its deadline, step every 100 ms. */
	while (l.now_ms <= 20000) {
		if (l.now_ms >= next) {
			CHECK_EQ(bms_line_poll(l.bms, l.now_ms, tx, sizeof(tx), &len, &next),
				 BMS_OK);
			size_t n = answering ? jbd_answer(tx, len, answer) : 0;

			/* In pieces, as the UART delivers them. */
			for (size_t at = 0; at < n; at += 5) {
				int32_t rc = bms_feed_bus(l.bms, l.now_ms, answer + at,
							  n - at < 5 ? n - at : 5);

				CHECK(rc >= 0);
				if (rc > 0) {
					reports += rc;
					last_report_ms = l.now_ms;
				}
			}
		}
		if (l.now_ms % 100 == 0) {
			CHECK_EQ(bms_step(l.bms, l.now_ms, &l.in, &l.out), BMS_OK);
			if (l.now_ms == 8000) {
				/* Joined and judged: both outputs on. */
				CHECK(l.out.atd);
				CHECK(l.out.atc);
				answering = false;
			}
			if (!answering && lost_ms == 0 && !l.out.atd) {
				lost_ms = l.now_ms;
			}
		}
		l.now_ms += 1;
	}
	CHECK(reports >= 6);
	CHECK(lost_ms > 0);
	CHECK(lost_ms - last_report_ms >= 5000);
	CHECK(lost_ms - last_report_ms <= 5100);
	CHECK(!l.out.atc);
	CHECK(l.out.atc_reasons & BIT(BMS_REASON_BATTERY_LOST));
	CHECK_EQ(bms_close(l.bms), BMS_OK);
}

struct scenario {
	const char *name;
	void (*run)(void);
};

/* BLE-2: the unit's own passkey; pairing only in a window (power-up without a bond, or after a
 * press of the button), back-off after a failure; bonds listed and removed through bond
 * actions; the button held 10 s resets pairing; hostile arguments change nothing. */
static void scenario_pairing(void)
{
	static uint8_t resp[BMS_GATT_RESPONSE_MAX];
	const struct bms_bond phone = { .address_type = 1,
					.address = { 0x11, 0x22, 0x33, 0x44, 0x55, 0xc6 } };
	const uint8_t list_bonds[] = { PROTO_VERSION, 6 };
	const uint8_t remove_bond[] = { PROTO_VERSION, 7, 1, 0x11, 0x22, 0x33, 0x44, 0x55, 0xc6 };
	/* 123456 as a varint. */
	const uint8_t change_passkey[] = { PROTO_VERSION, CMD_CHANGE_PASSKEY, 0xc0, 0xc4, 0x07 };
	const uint8_t read_protection_on[] = { PROTO_VERSION, 10, 1 };
	struct bms_bond four[5] = { phone, phone, phone, phone, phone };
	struct bms_bond_action action;
	struct loop l;
	uint32_t passkey = 0, first;
	size_t len;

	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	CHECK_EQ(bms_passkey(l.bms, &passkey), BMS_OK);
	CHECK(passkey >= 1 && passkey <= BMS_PASSKEY_MAX);
	first = passkey;
	loop_run(&l, 1000);
	CHECK(l.out.pairing_allowed); /* power-up, no bond */
	CHECK_EQ(bms_bonds_set(l.bms, &phone, 1), BMS_OK);
	loop_run(&l, 1500);
	CHECK(!l.out.pairing_allowed); /* a bond exists: only after a press */

	/* A press opens the window; the passkey is printed once. */
	CHECK_EQ(bms_button(l.bms, l.now_ms, 1), 0);
	CHECK_EQ(bms_button(l.bms, l.now_ms + 200, 0), 1);
	CHECK(port_mem_log_count("passkey") >= 1);
	loop_run(&l, 2500);
	CHECK(l.out.pairing_allowed);
	/* A failed attempt: back-off. */
	CHECK_EQ(bms_pairing_result(l.bms, l.now_ms, 0), BMS_OK);
	loop_run(&l, 3000);
	CHECK(!l.out.pairing_allowed);

	/* Bonds are listed and removed through a bond action. */
	len = gatt(l.bms, 3100, CHR_CONTROL_POINT, true, true, list_bonds, sizeof(list_bonds), resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK_EQ(len, 11);
	CHECK(memcmp(&resp[5], phone.address, 6) == 0);
	gatt(l.bms, 3100, CHR_CONTROL_POINT, true, true, remove_bond, sizeof(remove_bond), resp);
	CHECK_EQ(resp[1], STATUS_OK);
	CHECK_EQ(bms_bond_action(l.bms, &action), BMS_OK);
	CHECK_EQ(action.kind, BMS_BOND_ACTION_KIND_REMOVE);
	CHECK(memcmp(&action.bond, &phone, sizeof(phone)) == 0);
	CHECK_EQ(bms_bond_action(l.bms, &action), BMS_OK);
	CHECK_EQ(action.kind, BMS_BOND_ACTION_KIND_NONE);
	/* Read protection on: the steps tell the platform (its time limit on links that never
	 * authenticate). */
	CHECK(!l.out.read_protection);
	gatt(l.bms, 3150, CHR_CONTROL_POINT, true, true, read_protection_on,
	     sizeof(read_protection_on), resp);
	CHECK_EQ(resp[1], STATUS_OK);
	/* A passkey change removes every other bond. */
	gatt(l.bms, 3200, CHR_CONTROL_POINT, true, true, change_passkey, sizeof(change_passkey),
	     resp);
	CHECK_EQ(resp[1], STATUS_OK);
	loop_run(&l, 3300);
	CHECK(l.out.read_protection);
	CHECK(l.out.bond_action_pending);
	CHECK_EQ(bms_bond_action(l.bms, &action), BMS_OK);
	CHECK_EQ(action.kind, BMS_BOND_ACTION_KIND_REMOVE_OTHERS);

	/* Held 10 s: pairing reset, every bond removed, a new passkey. */
	CHECK_EQ(bms_button(l.bms, 4000, 1), 0);
	CHECK_EQ(bms_button(l.bms, 14000, 0), 2);
	CHECK_EQ(bms_bond_action(l.bms, &action), BMS_OK);
	CHECK_EQ(action.kind, BMS_BOND_ACTION_KIND_REMOVE_ALL);
	CHECK_EQ(bms_passkey(l.bms, &passkey), BMS_OK);
	CHECK(passkey != 123456 && passkey != first && passkey >= 1);
	CHECK_EQ(bms_flush(l.bms, 14000), BMS_OK);

	/* Hostile arguments: refused, nothing changes. */
	CHECK_EQ(bms_bonds_set(l.bms, four, 5), BMS_EINVAL);
	CHECK_EQ(bms_bonds_set(l.bms, NULL, 1), BMS_EINVAL);
	CHECK_EQ(bms_bonds_set(l.bms, NULL, 0), BMS_OK);
	CHECK_EQ(bms_bonds_set(NULL, &phone, 1), BMS_EINVAL);
	CHECK_EQ(bms_bond_action(l.bms, NULL), BMS_EINVAL);
	CHECK_EQ(bms_button(NULL, 0, 1), BMS_EINVAL);
	CHECK_EQ(bms_pairing_result(NULL, 0, 1), BMS_EINVAL);
	CHECK_EQ(bms_flush(NULL, 0), BMS_EINVAL);
	CHECK_EQ(bms_passkey(l.bms, NULL), BMS_EINVAL);
	CHECK_EQ(bms_close(l.bms), BMS_OK);
}

/* BLE-2, BLE-3: a flipped bit in the stored secrets, or a store that cannot be read at the
 * start, keeps the record as it was, gives no passkey (nothing pairs) and no advertisement,
 * and raises the secrets fault; the button held 10 s makes new secrets. */
static void scenario_secrets_fault(void)
{
	static unsigned char before[256], after[256];
	size_t before_len = 0, after_len = 0;
	uint8_t adv[BMS_ADVERTISEMENT_LEN];
	struct loop l;
	uint32_t passkey = 1;
	size_t len = 0;
	struct bms *bms = bms_open();

	loop_start(&l, bms, FIXTURE_BANK2_SUPPLY_MV);
	loop_run(&l, 1000);
	CHECK_EQ(bms_close(bms), BMS_OK);
	CHECK(port_mem_flip_bit("bms/secrets", 20));
	CHECK(port_mem_get("bms/secrets", before, sizeof(before), &before_len));

	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	CHECK_EQ(bms_passkey(l.bms, &passkey), BMS_EAGAIN);
	CHECK_EQ(passkey, 0);
	loop_run(&l, 3000);
	CHECK(!l.out.pairing_allowed);
	CHECK(l.out.codes & (1u << 17));
	CHECK_EQ(bms_advertisement(l.bms, adv, sizeof(adv), &len), BMS_EAGAIN);
	CHECK(port_mem_get("bms/secrets", after, sizeof(after), &after_len));
	CHECK(after_len == before_len && memcmp(before, after, before_len) == 0);

	CHECK_EQ(bms_button(l.bms, 3100, 1), 0);
	CHECK_EQ(bms_button(l.bms, 13100, 0), 2);
	CHECK_EQ(bms_passkey(l.bms, &passkey), BMS_OK);
	loop_run(&l, 14000);
	CHECK(l.out.pairing_allowed);
	CHECK(!(l.out.codes & (1u << 17)));
	CHECK_EQ(bms_close(l.bms), BMS_OK);

	/* Unreadable at the start: the same, and the record stays. */
	port_mem_fail_reads(true);
	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	port_mem_fail_reads(false);
	CHECK_EQ(bms_passkey(l.bms, &passkey), BMS_EAGAIN);
	CHECK(port_mem_get("bms/secrets", before, sizeof(before), &before_len));
	loop_run(&l, 2000);
	CHECK(port_mem_get("bms/secrets", after, sizeof(after), &after_len));
	CHECK(after_len == before_len && memcmp(before, after, before_len) == 0);
	CHECK_EQ(bms_close(l.bms), BMS_OK);
}

/* PROT-1 (rev 2), PROT-11, DFU-1: after a warm restart (a firmware update's reboot, a watchdog
 * reset) the first step drives ATD and ATC again from the state bms_retained() wrote before
 * the reset, and the drop at the reset is logged with its reason; with no battery data they go
 * free-floating 5 s later (BANK-4); an old or corrupt state, or none (cold start), waits for
 * data. */
static void scenario_warm_restart(void)
{
	uint8_t kept[BMS_RETAINED_LEN];
	size_t len = 0;
	struct loop l;

	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	loop_frames(&l, fixture_bank2_ok, sizeof(fixture_bank2_ok));
	loop_run(&l, 3000);
	CHECK(l.out.atd && l.out.atc);
	CHECK_EQ(bms_retained(l.bms, kept, 4, &len), BMS_ENOSPC);
	CHECK_EQ(bms_retained(l.bms, kept, sizeof(kept), &len), BMS_OK);
	CHECK_EQ(len, BMS_RETAINED_LEN);
	CHECK_EQ(bms_close(l.bms), BMS_OK);

	/* Warm, no battery data after the reset: driven at once, free-floating after 5 s. */
	CHECK_EQ(bms_set_warm_restart(kept, sizeof(kept), 3000), BMS_OK);
	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	loop_run(&l, 0);
	CHECK(l.out.atd && l.out.atc);
	CHECK(port_mem_log_count("atd free-floating: restart") >= 1);
	loop_run(&l, 4900);
	CHECK(l.out.atd);
	loop_run(&l, 5000);
	CHECK(!l.out.atd && !l.out.atc);
	CHECK_EQ(bms_close(l.bms), BMS_OK);

	/* Warm with battery data: driven throughout. */
	CHECK_EQ(bms_set_warm_restart(kept, sizeof(kept), 3000), BMS_OK);
	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	loop_frames(&l, fixture_bank2_ok, sizeof(fixture_bank2_ok));
	loop_run(&l, 0);
	CHECK(l.out.atd && l.out.atc);
	loop_run(&l, 8000);
	CHECK(l.out.atd && l.out.atc);
	CHECK_EQ(bms_close(l.bms), BMS_OK);

	/* A state 10 s old, a corrupt one, none: every output waits for data (PROT-1). */
	CHECK_EQ(bms_set_warm_restart(kept, sizeof(kept), 10000), BMS_OK);
	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	loop_run(&l, 0);
	CHECK(!l.out.atd && !l.out.atc);
	CHECK_EQ(bms_close(l.bms), BMS_OK);
	kept[5] ^= 0x01;
	CHECK_EQ(bms_set_warm_restart(kept, sizeof(kept), 0), BMS_EINVAL);
	CHECK_EQ(bms_set_warm_restart(NULL, BMS_RETAINED_LEN, 0), BMS_EINVAL);
	CHECK_EQ(bms_set_warm_restart(kept, 3, 0), BMS_EINVAL);
	loop_start(&l, bms_open(), FIXTURE_BANK2_SUPPLY_MV);
	loop_run(&l, 0);
	CHECK(!l.out.atd && !l.out.atc);
	CHECK_EQ(bms_close(l.bms), BMS_OK);
}

/* Every entry point refuses a call made from inside another call (here from bms_port_log, while
 * bms_open and bms_dfu_event run), bms_open, bms_close and the setters included: BMS_EBUSY
 * (bms_open: NULL), and the running call ends as if nothing had come. */
static void scenario_reentry(void)
{
	struct bms *bms = bms_open();
	uint64_t deadline;

	CHECK(bms != NULL);
	CHECK_EQ(bms_close(bms), BMS_OK);

	port_mem_reenter_all(bms);
	struct bms *again = bms_open();

	port_mem_reenter_all(NULL);
	CHECK(again == bms);
	CHECK(port_mem_reentry_calls() > 0);
	if (port_mem_reentry_accepted() != NULL) {
		printf("  accepted during bms_open: %s\n", port_mem_reentry_accepted());
	}
	CHECK(port_mem_reentry_accepted() == NULL);
	CHECK_EQ(bms_next_deadline_ms(bms, &deadline), BMS_OK);

	int calls = port_mem_reentry_calls();

	port_mem_reenter_all(bms);
	CHECK_EQ(bms_dfu_event(bms, 100, BMS_DFU_STARTED), BMS_OK);
	port_mem_reenter_all(NULL);
	CHECK(port_mem_reentry_calls() > calls);
	if (port_mem_reentry_accepted() != NULL) {
		printf("  accepted during bms_dfu_event: %s\n", port_mem_reentry_accepted());
	}
	CHECK(port_mem_reentry_accepted() == NULL);
	CHECK_EQ(bms_close(bms), BMS_OK);
}

static const struct scenario scenarios[] = {
	{ "reentry", scenario_reentry },
	{ "pairing", scenario_pairing },
	{ "secrets_fault", scenario_secrets_fault },
	{ "startup", scenario_startup },
	{ "undervoltage_with_prealarm", scenario_undervoltage_with_prealarm },
	{ "gatt_read", scenario_gatt_read },
	{ "settings_persist", scenario_settings_persist },
	{ "advertisement", scenario_advertisement },
	{ "jbd_line", scenario_jbd_line },
	{ "warm_restart", scenario_warm_restart },
};

int main(void)
{
	int passed = 0, failed = 0;

	CHECK_EQ(bms_set_log_level(4), BMS_OK);
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
		int before = checks_failed;

		port_mem_reset();
		scenarios[i].run();
		/* The library kept bms_port.h's rules (levels, lengths, keys). */
		CHECK_EQ(port_mem_bad_calls(), 0);
		if (checks_failed == before) {
			passed++;
			printf("scenario %s: ok\n", scenarios[i].name);
		} else {
			failed++;
			printf("scenario %s: FAILED\n", scenarios[i].name);
			port_mem_log_dump();
		}
	}
	printf("c harness: %d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
