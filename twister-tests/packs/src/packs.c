/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The packs hear the firmware's requests through the UART emulator's transmit callback
 * (byte by byte, where they also check the RS485 driver enable) and answer from their own
 * thread after a pack's reply latency, as the core's drivers expect of a real pack
 * (docs/battery-drivers.md). The answers are frames of real packs, captured and decoded byte
 * for byte in the core's tests (rust/bms-core/src/drivers/jbd.rs and jk.rs), with the values
 * a test changes patched in and the checksum recomputed; packs_frames_match_captured_bytes in
 * main.c checks the builders against the captures.
 */

#include <string.h>

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/drivers/gpio/gpio_emul.h>
#include <zephyr/drivers/serial/uart_emul.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/crc.h>
#include <zephyr/ztest.h>

#include "packs.h"

#define BMS_IO    DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)
#define LINE_JK   DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, jk)
#define LINE_JBD  DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, jbd)
#define LINE_DALY DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, daly)

BUILD_ASSERT(LINE_JK || LINE_JBD || LINE_DALY,
	     "the packs suite runs on a jbd, jk or daly line (testcase.yaml)");

/* A pack starts answering this long after the request's last byte. */
#define PACK_LATENCY_MS 5

/* JBD: DD A5 reg 00 ck_hi ck_lo 77. JK: address, 0x10, 0x1620, 1 register, 2 bytes, 0x0000,
 * CRC-16/Modbus low byte first. Daly: A5, 0x40 + board - 1, id, 08, eight zeros, sum.
 */
#define JBD_REQUEST_LEN  7
#define JK_REQUEST_LEN   11
#define DALY_FRAME_LEN   13
#define DALY_HOST        0x40
#define REQUEST_LEN                                                                               \
	(LINE_JK ? JK_REQUEST_LEN : (LINE_DALY ? DALY_FRAME_LEN : JBD_REQUEST_LEN))
#define REQUEST_MAX_LEN  DALY_FRAME_LEN

static const struct device *const bus_dev = DEVICE_DT_GET(DT_PHANDLE(BMS_IO, battery_bus));
static const struct gpio_dt_spec de = GPIO_DT_SPEC_GET_OR(BMS_IO, rs485_de_gpios, {0});

/* Register 0x03 of a 4-cell LIONTRON LX 12.8 V 100 Ah pack (its JBD reply "dd 03 00 1b ...
 * fc 39 77", test basic_info_of_a_real_4_cell_pack_decodes): 13.20 V, 0 A, 109.91 Ah, 65 %,
 * switches at data byte JBD_FET, 4 cells, 20.1 and 19.2 degC.
 */
static const uint8_t jbd_basic[] = {
	0x05, 0x28, 0x00, 0x00, 0x1b, 0xb2, 0x2a, 0xef, 0x00, 0x02, 0x29, 0x0a, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x25, 0x41, 0x03, 0x04, 0x02, 0x0b, 0x74, 0x0b, 0x6b,
};
#define JBD_FET 20

/* The pack's name, as in the JBD protocol document's example of register 0x05. */
static const uint8_t jbd_name[] = "0123456789";

/* A 16-cell JK-PB (314 Ah) answering the trigger on an RS485 bus, captured with a sniffer
 * (test captured_status_frame_decodes_byte_for_byte): 3268 mV a cell (cell 8: 3267), SoC 64 %,
 * both switches on at data bytes 0xC0 and 0xC1.
 */
static const uint8_t jk_captured[JK_STATUS_LEN] = {
	0x55, 0xAA, 0xEB, 0x90, 0x02, 0x05, 0xC4, 0x0C, 0xC4, 0x0C, 0xC4, 0x0C, 0xC4, 0x0C, 0xC4,
	0x0C, 0xC4, 0x0C, 0xC4, 0x0C, 0xC3, 0x0C, 0xC4, 0x0C, 0xC4, 0x0C, 0xC4, 0x0C, 0xC4, 0x0C,
	0xC4, 0x0C, 0xC4, 0x0C, 0xC4, 0x0C, 0xC4, 0x0C, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0xC4,
	0x0C, 0x01, 0x00, 0x00, 0x05, 0x3A, 0x00, 0x37, 0x00, 0x3A, 0x00, 0x37, 0x00, 0x3A, 0x00,
	0x38, 0x00, 0x3A, 0x00, 0x37, 0x00, 0x3B, 0x00, 0x39, 0x00, 0x3B, 0x00, 0x38, 0x00, 0x3B,
	0x00, 0x3A, 0x00, 0x3C, 0x00, 0x3A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xAE, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x3F, 0xCC, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xA7, 0x00, 0xAC,
	0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x40, 0xCA, 0x14, 0x03, 0x00, 0x90, 0xCA,
	0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0x02, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0xA8,
	0xFF, 0x03, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x01, 0x00, 0x00, 0x00, 0xA8, 0x03, 0x00, 0x00, 0x00,
	0x00, 0x9C, 0xD7, 0x3E, 0x40, 0x00, 0x00, 0x00, 0x00, 0x6C, 0x14, 0x00, 0x00, 0x00, 0x01,
	0x01, 0x01, 0x00, 0x06, 0x00, 0x00, 0xF4, 0x6B, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0xAE,
	0x00, 0xAB, 0x00, 0xA9, 0x00, 0xA4, 0x03, 0x80, 0xB8, 0x1F, 0x09, 0x03, 0x00, 0x00, 0x00,
	0x80, 0x51, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x49, 0x6D, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0xFE, 0xFF, 0x7F, 0xDC, 0x2F, 0x01, 0x01, 0xB0, 0x0F, 0x00, 0x00, 0x00, 0x2D,
};
#define JK_DATA         6
#define JK_CHARGE_ON    (JK_DATA + 0xC0)
#define JK_DISCHARGE_ON (JK_DATA + 0xC1)

/* A 4-cell Daly pack of 100 Ah: 13.2 V, 0 A (30000), 65.0 %, one sensor at 20 degC. The
 * frames are the Daly UART protocol document's (dbus-serialbattery's daly.py reads them
 * alike; test soc_frame_of_the_protocol_document_decodes_byte_for_byte in daly.rs).
 */
#define DALY_CELLS 4

struct pack {
	bool answering;
	bool sleeping;
	bool charge_on;
	bool discharge_on;
	uint16_t first_cell_mv;
};

static K_MUTEX_DEFINE(lock);
static struct pack packs[PACKS_MAX];
static struct packs_seen seen;

/* The request being heard, byte by byte (UART emulator callback only). */
static uint8_t heard[REQUEST_MAX_LEN];
static size_t heard_len;

K_MSGQ_DEFINE(requests, REQUEST_MAX_LEN, 4, 1);

size_t jbd_frame(uint8_t reg, const uint8_t *data, uint8_t len, uint8_t *out)
{
	uint16_t sum = 0;

	out[0] = 0xDD;
	out[1] = reg;
	out[2] = 0x00; /* status: ok */
	out[3] = len;
	memcpy(&out[4], data, len);
	for (size_t i = 2; i < 4U + len; i++) {
		sum += out[i];
	}
	sum = (uint16_t)(0x10000U - sum);
	out[4 + len] = (uint8_t)(sum >> 8);
	out[5 + len] = (uint8_t)sum;
	out[6 + len] = 0x77;
	return 7U + len;
}

size_t daly_frame(uint8_t board, uint8_t id, const uint8_t data[8], uint8_t *out)
{
	uint8_t sum = 0;

	out[0] = 0xA5;
	out[1] = board;
	out[2] = id;
	out[3] = 8;
	memcpy(&out[4], data, 8);
	for (size_t i = 0; i < DALY_FRAME_LEN - 1; i++) {
		sum += out[i];
	}
	out[DALY_FRAME_LEN - 1] = sum;
	return DALY_FRAME_LEN;
}

void jk_status(uint8_t cell, uint16_t cell_mv, bool charge_on, bool discharge_on, uint8_t *out)
{
	uint8_t sum = 0;

	memcpy(out, jk_captured, JK_STATUS_LEN);
	if (cell_mv != 0) {
		out[JK_DATA + 2 * cell] = (uint8_t)cell_mv;
		out[JK_DATA + 2 * cell + 1] = (uint8_t)(cell_mv >> 8);
	}
	out[JK_CHARGE_ON] = charge_on;
	out[JK_DISCHARGE_ON] = discharge_on;
	for (size_t i = 0; i < JK_STATUS_LEN - 1; i++) {
		sum += out[i];
	}
	out[JK_STATUS_LEN - 1] = sum;
}

void jk_echo(uint8_t address, uint8_t *out)
{
	static const uint8_t body[] = {0x10, 0x16, 0x20, 0x00, 0x01};
	uint16_t crc;

	out[0] = address;
	memcpy(&out[1], body, sizeof(body));
	crc = crc16_ansi(out, 6);
	out[6] = (uint8_t)crc;
	out[7] = (uint8_t)(crc >> 8);
}

/* The pack a well-formed request is for (1..PACKS_MAX), or 0. */
static uint8_t request_address(const uint8_t *req)
{
	if (LINE_DALY) {
		static const uint8_t zeros[8];
		uint8_t sum = 0;

		for (size_t i = 0; i < DALY_FRAME_LEN - 1; i++) {
			sum += req[i];
		}
		if (req[0] != 0xA5 || req[3] != 8 || memcmp(&req[4], zeros, 8) != 0 ||
		    req[12] != sum || req[1] < DALY_HOST || req[1] >= DALY_HOST + PACKS_MAX) {
			return 0;
		}
		return req[1] - DALY_HOST + 1;
	}
	if (LINE_JK) {
		static const uint8_t body[] = {0x10, 0x16, 0x20, 0x00, 0x01, 0x02, 0x00, 0x00};
		uint16_t crc = crc16_ansi(req, JK_REQUEST_LEN - 2);

		if (memcmp(&req[1], body, sizeof(body)) != 0 || req[9] != (uint8_t)crc ||
		    req[10] != (uint8_t)(crc >> 8) || req[0] < 1 || req[0] > PACKS_MAX) {
			return 0;
		}
		return req[0];
	}
	uint16_t sum = (uint16_t)(0x10000U - req[2] - req[3]);

	if (req[0] != 0xDD || req[1] != 0xA5 || req[3] != 0x00 || req[4] != (uint8_t)(sum >> 8) ||
	    req[5] != (uint8_t)sum || req[6] != 0x77) {
		return 0;
	}
	return 1;
}

/* A Daly pack's answer frames for data id @p id: one for most ids, one per three cells (0x95). */
static size_t daly_answer(const struct pack *pack, uint8_t board, uint8_t id, uint8_t *out)
{
	uint8_t d[8] = {0};
	size_t len = 0;

	switch (id) {
	case 0x90: /* 13.2 V in 0.1 V, current 30000 = 0 A, SoC 650 permille */
		d[1] = 132;
		d[4] = 0x75;
		d[5] = 0x30;
		d[6] = 0x02;
		d[7] = 0x8A;
		break;
	case 0x93: /* switch states: charge, discharge */
		d[1] = pack->charge_on;
		d[2] = pack->discharge_on;
		break;
	case 0x94: /* cells, temperature sensors */
		d[0] = DALY_CELLS;
		d[1] = 1;
		break;
	case 0x95: /* frame number, three cells in mV */
		for (uint8_t frame = 0; frame * 3 < DALY_CELLS; frame++) {
			memset(d, 0, sizeof(d));
			d[0] = frame + 1;
			for (uint8_t i = 0; i < 3 && frame * 3 + i < DALY_CELLS; i++) {
				uint16_t mv = (frame == 0 && i == 0 && pack->first_cell_mv != 0)
						      ? pack->first_cell_mv
						      : 3300;

				d[1 + 2 * i] = (uint8_t)(mv >> 8);
				d[2 + 2 * i] = (uint8_t)mv;
			}
			len += daly_frame(board, id, d, &out[len]);
		}
		return len;
	case 0x96: /* frame number, temperatures + 40 */
		d[0] = 1;
		d[1] = 20 + 40;
		break;
	case 0x97: /* balancing bits: none */
		break;
	case 0x50: /* rated capacity 100 000 mAh, nominal cell voltage 3200 mV */
		d[1] = 0x01;
		d[2] = 0x86;
		d[3] = 0xA0;
		d[6] = 0x0C;
		d[7] = 0x80;
		break;
	default:
		return 0;
	}
	return daly_frame(board, id, d, out);
}

/* Writes @p pack's answer to @p req into @p out; returns its length (0: nothing to say). */
static size_t answer(const struct pack *pack, const uint8_t *req, uint8_t *out)
{
	if (LINE_DALY) {
		return daly_answer(pack, req[1] - DALY_HOST + 1, req[2], out);
	}
	if (LINE_JK) {
		jk_status(0, pack->first_cell_mv, pack->charge_on, pack->discharge_on, out);
		jk_echo(req[0], &out[JK_STATUS_LEN]);
		return JK_STATUS_LEN + JK_ECHO_LEN;
	}

	uint8_t data[sizeof(jbd_basic)];
	uint8_t cells[8];

	switch (req[2]) {
	case 0x03:
		memcpy(data, jbd_basic, sizeof(data));
		data[JBD_FET] = (uint8_t)(pack->charge_on | (pack->discharge_on << 1));
		return jbd_frame(0x03, data, sizeof(data), out);
	case 0x04:
		for (size_t i = 0; i < 4; i++) {
			uint16_t mv = (i == 0 && pack->first_cell_mv != 0) ? pack->first_cell_mv
									    : 3300;

			cells[2 * i] = (uint8_t)(mv >> 8);
			cells[2 * i + 1] = (uint8_t)mv;
		}
		return jbd_frame(0x04, cells, sizeof(cells), out);
	case 0x05:
		return jbd_frame(0x05, jbd_name, sizeof(jbd_name) - 1, out);
	default:
		return 0;
	}
}

/* UART emulator: the firmware's interrupt put bytes into the transmit FIFO. */
static void on_tx(const struct device *dev, size_t size, void *user_data)
{
	uint8_t byte;

	ARG_UNUSED(size);
	ARG_UNUSED(user_data);

	while (uart_emul_get_tx_data(dev, &byte, 1) == 1) {
		if (de.port != NULL && gpio_emul_output_get(de.port, de.pin) != 1) {
			k_mutex_lock(&lock, K_FOREVER);
			seen.bytes_without_de++;
			k_mutex_unlock(&lock);
		}
		/* A request starts with its start byte (JBD, Daly) or an address (JK). */
		if (heard_len == 0 && !(LINE_JK ? byte >= 1 : byte == (LINE_DALY ? 0xA5 : 0xDD))) {
			continue;
		}
		heard[heard_len++] = byte;
		if (heard_len == REQUEST_LEN) {
			zassert_ok(k_msgq_put(&requests, heard, K_NO_WAIT), "requests piled up");
			heard_len = 0;
		}
	}
}

static void pack_thread(void *p1, void *p2, void *p3)
{
	static uint8_t out[JK_STATUS_LEN + JK_ECHO_LEN];
	uint8_t req[REQUEST_MAX_LEN];

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	for (;;) {
		struct pack pack;
		uint8_t address;
		size_t len = 0;

		k_msgq_get(&requests, req, K_FOREVER);
		k_sleep(K_MSEC(PACK_LATENCY_MS));

		address = request_address(req);
		if (address == 0) {
			continue;
		}

		k_mutex_lock(&lock, K_FOREVER);
		if (seen.requests[0] + seen.requests[1] == 0) {
			memcpy(seen.first, req, REQUEST_LEN);
			seen.first_len = REQUEST_LEN;
		}
		seen.requests[address - 1]++;
		if (!LINE_JK) {
			seen.asked[req[2]]++;
		}
		pack = packs[address - 1];
		packs[address - 1].sleeping = false;
		k_mutex_unlock(&lock);

		if (!pack.answering || pack.sleeping) {
			continue;
		}
		len = answer(&pack, req, out);
		if (len == 0) {
			continue;
		}

		k_mutex_lock(&lock, K_FOREVER);
		if (de.port != NULL && gpio_emul_output_get(de.port, de.pin) != 0) {
			seen.answers_with_de++;
		}
		if (LINE_JK || req[2] == (LINE_DALY ? 0x96 : 0x04)) {
			seen.last_answer_ms[address - 1] = k_uptime_get();
		}
		k_mutex_unlock(&lock);

		zassert_equal(uart_emul_put_rx_data(bus_dev, out, len), len,
			      "UART emulator refused part of an answer");
	}
}

K_THREAD_STACK_DEFINE(pack_stack, 2048);
static struct k_thread pack_thread_data;

void packs_start(void)
{
	for (size_t i = 0; i < PACKS_MAX; i++) {
		packs[i] = (struct pack){.charge_on = true, .discharge_on = true};
		seen.last_answer_ms[i] = -1;
	}
	uart_emul_callback_tx_data_ready_set(bus_dev, on_tx, NULL);
	k_thread_create(&pack_thread_data, pack_stack, K_THREAD_STACK_SIZEOF(pack_stack),
			pack_thread, NULL, NULL, NULL, 4, 0, K_NO_WAIT);
}

static struct pack *pack_at(uint8_t address)
{
	zassert_true(address >= 1 && address <= PACKS_MAX, "no pack at address %u", address);
	return &packs[address - 1];
}

void packs_answering(uint8_t address, bool answering)
{
	k_mutex_lock(&lock, K_FOREVER);
	pack_at(address)->answering = answering;
	k_mutex_unlock(&lock);
}

void packs_sleep(uint8_t address)
{
	k_mutex_lock(&lock, K_FOREVER);
	pack_at(address)->sleeping = true;
	k_mutex_unlock(&lock);
}

void packs_switches(uint8_t address, bool charge_on, bool discharge_on)
{
	k_mutex_lock(&lock, K_FOREVER);
	pack_at(address)->charge_on = charge_on;
	pack_at(address)->discharge_on = discharge_on;
	k_mutex_unlock(&lock);
}

void packs_first_cell_mv(uint8_t address, uint16_t mv)
{
	k_mutex_lock(&lock, K_FOREVER);
	pack_at(address)->first_cell_mv = mv;
	k_mutex_unlock(&lock);
}

struct packs_seen packs_seen(void)
{
	struct packs_seen copy;

	k_mutex_lock(&lock, K_FOREVER);
	copy = seen;
	k_mutex_unlock(&lock);
	return copy;
}
