/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Packs with their own BMS on the battery line (issue 17): the firmware, configured by the
 * devicetree (jbd.overlay, jk.overlay, daly.overlay), sends the requests the core asks for
 * through the real bus.c and control.c; packs.c answers as JBD, JK-PB or Daly packs do. The
 * effect is read where it matters: on the outputs. One scenario per protocol (testcase.yaml).
 */

#include <string.h>

#include <zephyr/devicetree.h>
#include <zephyr/kernel.h>
#include <zephyr/ztest.h>

#include "app.h"
#include "packs.h"
#include "support.h"

#define BMS_IO DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)

/* A step runs at least once a second: an output follows a decision within this. */
#define STEP_MS 1000

static void *packs_setup(void)
{
	/* The bank's voltage at Bat+: 4 cells of 3.3 V (JBD, Daly), 16 of 3.268 V (JK). */
	support_terminal_mv(ADC_BATTERY,
			    DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, jk) ? 52288 : 13200);
	/* Remote L at battery minus: remote ON (PROT-8). */
	support_terminal_mv(ADC_REMOTE_H, 0);
	support_terminal_mv(ADC_REMOTE_L, 0);

	packs_start();
	support_start_firmware(false);
	return NULL;
}

/* The suite's pack frames are the captured and documented ones (rust/bms-core/src/drivers/
 * jbd.rs, jk.rs, daly.rs).
 */
ZTEST(packs, test_frames_match_captured_bytes)
{
	/* A LIONTRON 4-cell pack's register 0x03 reply, and the JBD document's name example. */
	static const uint8_t liontron[] = {
		0xdd, 0x03, 0x00, 0x1b, 0x05, 0x28, 0x00, 0x00, 0x1b, 0xb2, 0x2a, 0xef,
		0x00, 0x02, 0x29, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x25, 0x41,
		0x03, 0x04, 0x02, 0x0b, 0x74, 0x0b, 0x6b, 0xfc, 0x39, 0x77,
	};
	static const uint8_t name[] = {0xDD, 0x05, 0x00, 0x0A, 0x30, 0x31, 0x32, 0x33, 0x34,
				       0x35, 0x36, 0x37, 0x38, 0x39, 0xFD, 0xE9, 0x77};
	/* The Daly UART protocol document's example answer to 0x90 (76.4 V, 30113, 0 %). */
	static const uint8_t daly_soc[] = {0xA5, 0x01, 0x90, 0x08, 0x02, 0xFC, 0x00,
					   0x00, 0x75, 0xA1, 0x00, 0x00, 0x52};
	/* The JK-PB echo of address 1 after its status frame, from the same RS485 capture. */
	static const uint8_t echo[] = {0x01, 0x10, 0x16, 0x20, 0x00, 0x01, 0x04, 0x4B};
	uint8_t out[JK_STATUS_LEN];

	zassert_equal(jbd_frame(0x03, &liontron[4], 27, out), sizeof(liontron));
	zassert_mem_equal(out, liontron, sizeof(liontron));
	zassert_equal(jbd_frame(0x05, (const uint8_t *)"0123456789", 10, out), sizeof(name));
	zassert_mem_equal(out, name, sizeof(name));

	zassert_equal(daly_frame(1, 0x90, &daly_soc[4], out), sizeof(daly_soc));
	zassert_mem_equal(out, daly_soc, sizeof(daly_soc));

	jk_echo(1, out);
	zassert_mem_equal(out, echo, sizeof(echo));
	/* Unchanged, the captured status frame keeps its own checksum (0x2D). */
	jk_status(0, 0, true, true, out);
	zassert_equal(out[JK_STATUS_LEN - 1], 0x2D);
}

/* Waits up to @p timeout_ms for both ATC and ATD to read @p level. */
static void wait_atc_atd(int level, int64_t timeout_ms, const char *why)
{
	zassert_true(support_wait_output(PIN_ATC, level, timeout_ms) >= 0, "ATC: %s", why);
	zassert_true(support_wait_output(PIN_ATD, level, timeout_ms) >= 0, "ATD: %s", why);
}

/* BANK-4: the outputs float 5 s after the last report of pack @p address (silenced now), found
 * by the next step: not earlier, and not much later.
 */
static void check_lost_after_5_s(uint8_t address)
{
	int64_t last;
	int64_t atd_off_at;

	packs_answering(address, false);
	/* An answer already on its way still counts: take the time once none can follow. */
	k_sleep(K_MSEC(200));
	last = packs_seen().last_answer_ms[address - 1];

	atd_off_at = support_wait_output(PIN_ATD, 0, 20000);
	zassert_true(atd_off_at >= 0, "ATD stayed high with pack %u silent", address);
	zassert_true(atd_off_at - last >= 5000, "pack %u lost %lld ms after its last report",
		     address, (long long)(atd_off_at - last));
	zassert_true(atd_off_at - last <= 5000 + STEP_MS + 500,
		     "pack %u lost %lld ms after its last report, more than a step after 5 s",
		     address, (long long)(atd_off_at - last));
	zassert_equal(support_output(PIN_ATC), 0, "ATC high with pack %u lost", address);
}

#if !DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, jk)
/* PROT-7: pack 1's own charge (@p charge) or discharge switch off makes ATC or ATD float, and
 * only that one, for as long as it is off.
 */
static void check_prot_7_switch_off(bool charge)
{
	uint8_t pin = charge ? PIN_ATC : PIN_ATD;
	const char *name = charge ? "charge" : "discharge";

	packs_switches(1, !charge, charge);
	zassert_true(support_wait_output(pin, 0, 3 * STEP_MS) >= 0,
		     "output high with the pack's %s switch off", name);
	zassert_equal(support_output(charge ? PIN_ATD : PIN_ATC), 1,
		      "the other output followed the %s switch", name);
	packs_switches(1, true, true);
	zassert_true(support_wait_output(pin, 1, 3 * STEP_MS) >= 0,
		     "output low with the pack's %s switch on again", name);
}
#endif

/* PROT-1: with every pack silent for 3 s, nothing is driven, though the firmware keeps asking
 * pack 1; its first request is @p first.
 */
static void check_asking_silent_packs(const uint8_t *first, size_t len)
{
	struct packs_seen seen;

	k_sleep(K_MSEC(3000));
	seen = packs_seen();
	zassert_true(seen.requests[0] >= 3, "%u requests in 3 s to a silent pack",
		     seen.requests[0]);
	zassert_equal(seen.first_len, len);
	zassert_mem_equal(seen.first, first, len);
	zassert_equal(support_output(PIN_ATD), 0, "ATD high before any pack answered");
	zassert_equal(support_output(PIN_ATC), 0, "ATC high before any pack answered");
}

#if DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, jbd)

/* PROT-1: nothing is driven while the pack is silent, though the firmware keeps asking it (the
 * JBD document's "read basic information" first). A pack that sleeps through the first request
 * it hears answers the next (the core's retry): it joins the bank and ATD and ATC go high.
 * PROT-7: its own "discharge not allowed" switch makes ATD float, for as long as it is set.
 * BANK-4: silent, it is lost 5 s after its last report.
 */
ZTEST(packs, test_prot_1_prot_7_bank_4_jbd_pack)
{
	static const uint8_t read_basic[] = {0xDD, 0xA5, 0x03, 0x00, 0xFF, 0xFD, 0x77};
	struct packs_seen seen;

	check_asking_silent_packs(read_basic, sizeof(read_basic));

	packs_sleep(1);
	packs_answering(1, true);
	wait_atc_atd(1, 15000, "not high with the pack answering");
	/* Cells (0x04) were read too, and the name (0x05) once. */
	seen = packs_seen();
	zassert_true(seen.asked[0x04] >= 1, "cells not read");
	zassert_equal(seen.asked[0x05], 1, "name read %u times", seen.asked[0x05]);

	check_prot_7_switch_off(false);

	check_lost_after_5_s(1);
}

#elif DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, daly)

/* PROT-1: nothing is driven while the Daly pack is silent, though the firmware keeps asking it
 * (first its cell and sensor counts, 0x94, with dbus-serialbattery's request bytes). Answering,
 * it joins: counts and rated capacity (0x50) are read once, then voltage, switches, cells and
 * temperatures every round; ATD and ATC go high.
 * PROT-7: its own "charge off" switch makes ATC float, for as long as it is set.
 * BANK-4: silent, it is lost 5 s after its last report.
 */
ZTEST(packs, test_prot_1_prot_7_bank_4_daly_pack)
{
	static const uint8_t read_counts[] = {0xA5, 0x40, 0x94, 0x08, 0x00, 0x00, 0x00,
					      0x00, 0x00, 0x00, 0x00, 0x00, 0x81};
	struct packs_seen seen;
	uint16_t counts_asked;

	check_asking_silent_packs(read_counts, sizeof(read_counts));

	packs_answering(1, true);
	wait_atc_atd(1, 15000, "not high with the pack answering");
	seen = packs_seen();
	zassert_true(seen.asked[0x94] >= 1 && seen.asked[0x50] >= 1, "counts or capacity not read");
	zassert_true(seen.asked[0x90] >= 1 && seen.asked[0x93] >= 1 && seen.asked[0x95] >= 1 &&
			     seen.asked[0x96] >= 1,
		     "a round without SoC, switches, cells or temperatures");
	counts_asked = seen.asked[0x94];
	k_sleep(K_MSEC(3000));
	seen = packs_seen();
	zassert_equal(seen.asked[0x94], counts_asked, "counts asked again");
	zassert_equal(seen.asked[0x50], 1, "capacity asked %u times", seen.asked[0x50]);

	check_prot_7_switch_off(true);

	check_lost_after_5_s(1);
}

#else /* jk */

/* PROT-1: nothing is driven while the packs are silent; the firmware asks each address in turn
 * with the trigger JK's own PC monitor sends (captured "01 10 16 20 00 01 02 00 00 D6 F1"),
 * with the RS485 driver enabled for every byte and disabled before a pack answers. Both packs
 * join the bank; ATD and ATC go high.
 * PROT-4: a cell of pack 2 above 3.75 V makes ATC float; ATD stays.
 * BANK-4: pack 2 silent while pack 1 answers on: the bank loses it 5 s after its last report,
 * and is whole again when it answers.
 */
ZTEST(packs, test_prot_1_prot_4_bank_4_two_jk_packs)
{
	static const uint8_t trigger_1[] = {0x01, 0x10, 0x16, 0x20, 0x00, 0x01,
					    0x02, 0x00, 0x00, 0xD6, 0xF1};
	struct packs_seen seen;

	check_asking_silent_packs(trigger_1, sizeof(trigger_1));
	zassert_true(packs_seen().requests[1] >= 1, "pack 2 never asked");

	packs_answering(1, true);
	packs_answering(2, true);
	wait_atc_atd(1, 15000, "not high with both packs answering");

	packs_first_cell_mv(2, 3800);
	zassert_true(support_wait_output(PIN_ATC, 0, 4 * STEP_MS) >= 0,
		     "ATC high with a cell at 3.8 V");
	zassert_equal(support_output(PIN_ATD), 1, "ATD followed the charge-side trip");
	packs_first_cell_mv(2, 0);
	zassert_true(support_wait_output(PIN_ATC, 1, 4 * STEP_MS) >= 0,
		     "ATC low with every cell below 3.60 V again");

	check_lost_after_5_s(2);
	zassert_true(packs_seen().last_answer_ms[0] > k_uptime_get() - 2000,
		     "pack 1 stopped answering too");

	packs_answering(2, true);
	wait_atc_atd(1, 15000, "not high again with pack 2 back");

	seen = packs_seen();
	zassert_equal(seen.bytes_without_de, 0, "%u request bytes sent with DE off",
		      seen.bytes_without_de);
	zassert_equal(seen.answers_with_de, 0, "%u answers met DE still on",
		      seen.answers_with_de);
}

#endif

ZTEST_SUITE(packs, NULL, packs_setup, NULL, NULL, NULL);
