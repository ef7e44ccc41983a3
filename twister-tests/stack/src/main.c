/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The control thread's stack, measured: the real control loop (control.c, io.c, bus.c,
 * storage.c, retained.c, core_log.c and the Rust core) opens the core, steps with battery
 * reports arriving on the bus, answers a read of every GATT characteristic and authenticated
 * writes (rename, ChangePasskey, which store records), goes through an under-voltage alarm and
 * a DFU start and abort. Then Zephyr's thread analyzer reports how much of the control
 * thread's stack was ever used, and the suite fails below 25 % headroom (docs/firmware.md).
 *
 * The figure means something on a Cortex-M4F with the product's float ABI: mps2/an386 in
 * QEMU (scripts/zephyr-build runs it). On native_sim the loop runs the same, but Zephyr
 * threads run on host thread stacks and the thread analyzer does not exist there
 * (CONFIG_THREAD_ANALYZER depends on !ARCH_POSIX): the measurement case is skipped.
 */

#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/ztest.h>
#if defined(CONFIG_THREAD_ANALYZER)
#include <zephyr/debug/thread_analyzer.h>
#endif

#include "app.h"
#include "support.h"

#define HEALTHY_CELL_MV 3300
#define LOW_CELL_MV 2750
#define CELLS 4
/* docs/firmware.md: main and control stacks keep at least 25 % headroom. */
#define MIN_HEADROOM_PERCENT 25

static void terminals(uint32_t cell_mv)
{
	support_terminal_mv(ADC_BATTERY, cell_mv * CELLS);
	support_terminal_mv(ADC_REMOTE_H, 0);
	support_terminal_mv(ADC_REMOTE_L, 0);
}

static void *stack_setup(void)
{
	terminals(HEALTHY_CELL_MV);

	support_start_firmware(true);
	return NULL;
}

static int32_t gatt(uint8_t chr, bool write, bool authenticated, const uint8_t *req,
		    size_t req_len)
{
	static uint8_t resp[BMS_GATT_RESPONSE_MAX];
	size_t resp_len = 0;

	return control_gatt(chr, write, authenticated, req, req_len, resp, sizeof(resp),
			    &resp_len);
}

/* Runs the control thread through its paths; checks only that each one was taken. */
ZTEST(stack, test_1_control_thread_paths)
{
	static const uint8_t rename[] = {0x01, 0x06, 'B', 'o', 'a', 't', ' ', '2'};
	/* ChangePasskey (command 4) with 123456. */
	static const uint8_t change_passkey[] = {0x01, 0x04, 0xC0, 0xC4, 0x07};

	support_feed_cells(HEALTHY_CELL_MV);
	zassert_true(support_wait_output(PIN_ATD, 1, 30000) >= 0, "ATD not high when healthy");

	for (uint8_t chr = BMS_CHR_STATUS; chr <= BMS_CHR_SOC; chr++) {
		zassert_ok(gatt(chr, false, false, NULL, 0), "read of characteristic %u", chr);
		zassert_ok(gatt(chr, false, true, NULL, 0), "authenticated read of %u", chr);
	}
	zassert_ok(gatt(BMS_CHR_DEVICE_NAME, true, true, rename, sizeof(rename)));
	zassert_str_equal(support_ble().name, "Boat 2", "rename not applied");
	zassert_ok(gatt(BMS_CHR_CONTROL_POINT, true, true, change_passkey,
			sizeof(change_passkey)));
	zassert_equal(support_ble().passkey, 123456, "passkey change not applied");

	zassert_ok(control_post_dfu(BMS_DFU_STARTED));
	zassert_ok(control_post_dfu(BMS_DFU_ABORTED));

	/* Under-voltage: pre-alarm first (PROT-2), events and their log lines. */
	support_feed_cells(LOW_CELL_MV);
	terminals(LOW_CELL_MV);
	zassert_true(support_wait_output(PIN_PREALARM, 1, 30000) >= 0, "no pre-alarm");
	support_feed_cells(HEALTHY_CELL_MV);
	terminals(HEALTHY_CELL_MV);
	zassert_true(support_wait_output(PIN_PREALARM, 0, 30000) >= 0, "pre-alarm stayed");
}

#if defined(CONFIG_THREAD_ANALYZER)
static struct thread_analyzer_info control_info;
static bool control_found;

static void analyzed(struct thread_analyzer_info *info)
{
	if (strcmp(info->name, "bms_control") == 0) {
		control_info = *info;
		control_found = true;
	}
}
#endif

/* The control thread's stack use after test_1 (the analyzer keeps the high-water mark). */
ZTEST(stack, test_2_control_stack_headroom)
{
#if defined(CONFIG_THREAD_ANALYZER)
	size_t headroom_percent;

	thread_analyzer_print(0);
	thread_analyzer_run(analyzed, 0);
	zassert_true(control_found, "no thread named bms_control");
	headroom_percent = 100 * (control_info.stack_size - control_info.stack_used) /
			   control_info.stack_size;
	printk("stack bms_control: %zu B used of %zu B (%zu %% headroom)\n",
	       control_info.stack_used, control_info.stack_size, headroom_percent);
	zassert_true(headroom_percent >= MIN_HEADROOM_PERCENT,
		     "control thread: %zu B used of %zu B, %zu %% headroom (< %d %%)",
		     control_info.stack_used, control_info.stack_size, headroom_percent,
		     MIN_HEADROOM_PERCENT);
#else
	ztest_test_skip();
#endif
}

ZTEST_SUITE(stack, NULL, stack_setup, NULL, NULL, NULL);
