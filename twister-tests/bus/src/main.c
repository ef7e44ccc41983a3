/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Battery-bus bytes injected into the UART emulator travel the real path (UART interrupt,
 * bus.c ring buffer, drained by the control thread) to the core's frame decoder. The effect is
 * read where it matters: on the outputs.
 */

#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/ztest.h>

#include "app.h"
#include "support.h"

static void *bus_setup(void)
{
	support_terminal_mv(ADC_BATTERY, 4 * 3300);
	support_terminal_mv(ADC_REMOTE_H, 0);
	support_terminal_mv(ADC_REMOTE_L, 0);

	support_start_firmware(false);
	return NULL;
}

/* The test fixture encodes exactly the example frame of docs/battery-bus.md. */
ZTEST(bus, test_frame_fixture_matches_documented_bytes)
{
	static const uint8_t wire[] = {
		0x06, 0x01, 0x01, 0xC0, 0xC4, 0x07, 0x16, 0xD0, 0x0F, 0x92, 0x02,
		0x04, 0xF0, 0x19, 0xF3, 0x19, 0xED, 0x19, 0xEF, 0x19, 0x01, 0xAE,
		0x03, 0xF1, 0xC0, 0x01, 0x01, 0x01, 0x03, 0x48, 0x67, 0x00,
	};
	struct test_report r = support_report(3300);
	uint8_t frame[128];
	size_t len;

	r.cells_mv[0] = 3312;
	r.cells_mv[1] = 3315;
	r.cells_mv[2] = 3309;
	r.cells_mv[3] = 3311;
	r.temps_ddegc[0] = 215;
	r.current_ma = -12345;

	len = support_encode_frame(&r, frame, sizeof(frame));
	zassert_equal(len, sizeof(wire));
	zassert_mem_equal(frame, wire, sizeof(wire));
}

/* Sends one report in two pieces; returns the uptime when its last byte was handed over. */
static int64_t send_report_split(uint16_t cell_mv)
{
	struct test_report r = support_report(cell_mv);
	uint8_t frame[128];
	size_t len = support_encode_frame(&r, frame, sizeof(frame));

	/* Split anywhere: the core's decoder, not the UART timing, finds the frames. */
	support_bus_rx(frame, 5);
	k_sleep(K_MSEC(3));
	support_bus_rx(&frame[5], len - 5);
	return k_uptime_get();
}

/* PROT-1: all outputs float at power-up and while only garbage arrives; frames injected
 * through the UART reach the core and, once judged safe, ATD and ATC go high.
 * BANK-4: when the frames stop for 5 s the battery is lost and ATD and ATC float again.
 */
ZTEST(bus, test_prot_1_bank_4_frames_drive_outputs)
{
	static const uint8_t garbage[] = {0x13, 0x37, 0xff, 0x00, 0x02, 0x01, 0x00, 0xaa, 0x00};
	int64_t last_frame_at = 0;
	int64_t atd_off_at;

	for (int i = 0; i < 30; i++) {
		support_bus_rx(garbage, sizeof(garbage));
		k_sleep(K_MSEC(100));
	}
	zassert_equal(support_output(PIN_ATD), 0, "ATD high before any battery data");
	zassert_equal(support_output(PIN_ATC), 0, "ATC high before any battery data");

	/* Frames every second until both outputs are on; the time of the last one is kept. */
	for (int i = 0; i < 12 && !(support_output(PIN_ATC) == 1 && support_output(PIN_ATD) == 1);
	     i++) {
		last_frame_at = send_report_split(3300);
		k_sleep(K_MSEC(1000));
	}
	zassert_equal(support_output(PIN_ATC), 1, "ATC not high after valid frames");
	zassert_equal(support_output(PIN_ATD), 1, "ATD not high after valid frames");

	/* BANK-4: lost 5 s after the last frame, found by the next step (at most one tick, 1 s,
	 * later) — not earlier, and not much later.
	 */
	atd_off_at = support_wait_output(PIN_ATD, 0, 20000);
	zassert_true(atd_off_at >= 0, "ATD stayed high with the bus silent");
	zassert_true(atd_off_at - last_frame_at >= 5000,
		     "battery lost %lld ms after the last frame, before 5 s",
		     (long long)(atd_off_at - last_frame_at));
	zassert_true(atd_off_at - last_frame_at <= 5000 + 1500,
		     "battery lost %lld ms after the last frame, more than a step after 5 s",
		     (long long)(atd_off_at - last_frame_at));
	zassert_equal(support_output(PIN_ATC), 0, "ATC high with the battery lost");
}

ZTEST_SUITE(bus, NULL, bus_setup, NULL, NULL, NULL);
