/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The real control loop (control.c, io.c, bus.c, storage.c) on native_sim: battery reports
 * enter through the UART emulator, the terminal voltages through the ADC emulator, and the
 * outputs are read back from the GPIO emulator while the kernel clock runs.
 */

#include <zephyr/kernel.h>
#include <zephyr/ztest.h>

#include "app.h"
#include "support.h"

#define HEALTHY_CELL_MV 3300
#define LOW_CELL_MV 2750
#define CELLS 4

static void terminals(uint32_t cell_mv, uint32_t remote_h_mv, uint32_t remote_l_mv)
{
	support_terminal_mv(ADC_BATTERY, cell_mv * CELLS);
	support_terminal_mv(ADC_REMOTE_H, remote_h_mv);
	support_terminal_mv(ADC_REMOTE_L, remote_l_mv);
}

static void *outputs_setup(void)
{
	/* Remote L pulled to battery minus: remote ON (PROT-8). */
	terminals(HEALTHY_CELL_MV, 0, 0);

	support_start_firmware(true);
	return NULL;
}

static void outputs_before(void *fixture)
{
	ARG_UNUSED(fixture);

	support_feed_cells(HEALTHY_CELL_MV);
	terminals(HEALTHY_CELL_MV, 0, 0);
	zassert_true(support_wait_output(PIN_ATD, 1, 60000) >= 0, "ATD not high when healthy");
	zassert_true(support_wait_output(PIN_ATC, 1, 60000) >= 0, "ATC not high when healthy");
	zassert_true(support_wait_output(PIN_PREALARM, 0, 60000) >= 0, "pre-alarm active when healthy");
}

/* PROT-2: under-voltage raises the pre-alarm first; ATD floats only after the pre-alarm has
 * been active for at least 30 s (kernel clock), and returns when the cells recover.
 */
ZTEST(outputs, test_prot_2_prealarm_then_atd_after_30s)
{
	int64_t prealarm_at;
	int64_t atd_off_at;

	support_feed_cells(LOW_CELL_MV);
	terminals(LOW_CELL_MV, 0, 0);

	prealarm_at = support_wait_output(PIN_PREALARM, 1, 30000);
	zassert_true(prealarm_at >= 0, "pre-alarm not raised by an under-voltage");
	zassert_equal(support_output(PIN_ATD), 1, "ATD floated together with the pre-alarm");

	atd_off_at = support_wait_output(PIN_ATD, 0, 120000);
	zassert_true(atd_off_at >= 0, "ATD never floated on a lasting under-voltage");
	zassert_true(atd_off_at - prealarm_at >= 30000,
		     "ATD floated %lld ms after the pre-alarm, not >= 30 s",
		     (long long)(atd_off_at - prealarm_at));

	support_feed_cells(HEALTHY_CELL_MV);
	terminals(HEALTHY_CELL_MV, 0, 0);
	zassert_true(support_wait_output(PIN_ATD, 1, 60000) >= 0, "ATD did not return at 3.30 V");
}

/* PROT-8: Remote L left high and Remote H low (no wire loop) is remote OFF: ATD, ATC and
 * the pre-alarm float; the wire loop back (L to minus) brings ATD and ATC back.
 */
ZTEST(outputs, test_prot_8_remote_off_floats_outputs)
{
	terminals(HEALTHY_CELL_MV, 0, HEALTHY_CELL_MV * CELLS);

	zassert_true(support_wait_output(PIN_ATD, 0, 10000) >= 0, "ATD high with remote OFF");
	zassert_true(support_wait_output(PIN_ATC, 0, 10000) >= 0, "ATC high with remote OFF");
	zassert_equal(support_output(PIN_PREALARM), 0, "pre-alarm active with remote OFF");

	terminals(HEALTHY_CELL_MV, 0, 0);
	zassert_true(support_wait_output(PIN_ATD, 1, 10000) >= 0, "ATD not back with remote ON");
	zassert_true(support_wait_output(PIN_ATC, 1, 10000) >= 0, "ATC not back with remote ON");
}

/* PROT-8: Remote H driven high (2.9 V < H < Vbat) is remote ON even with L not at minus. */
ZTEST(outputs, test_prot_8_remote_h_high_is_on)
{
	terminals(HEALTHY_CELL_MV, 5000, HEALTHY_CELL_MV * CELLS);
	k_sleep(K_SECONDS(5));

	zassert_equal(support_output(PIN_ATD), 1, "ATD floated with Remote H high");
	zassert_equal(support_output(PIN_ATC), 1, "ATC floated with Remote H high");
}

ZTEST_SUITE(outputs, NULL, outputs_setup, outputs_before, NULL, NULL);
