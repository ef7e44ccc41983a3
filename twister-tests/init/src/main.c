/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * app/src/main.c (built as app_main) against fakes of the parts it starts. Each start makes
 * one part fail and runs app_main on its own thread. A reboot is Zephyr's real sys_reboot():
 * native_sim re-executes itself (CONFIG_NATIVE_SIM_REBOOT) on the same flash file, so the
 * suite keeps its progress in a settings record: before each start it stores which start is
 * running; a boot that finds a start still marked running knows that start rebooted.
 */

#include <errno.h>
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/settings/settings.h>
#include <zephyr/ztest.h>

#include "app.h"

int app_main(void);

enum part {
	PART_NONE,
	PART_STORAGE,
	PART_IO,
	PART_CONTROL,
	PART_BUS,
	PART_CONTROL_START,
	PART_BLE,
};

/* The starts, in order: the parts whose failure must reboot, then Bluetooth and none. */
static const enum part starts[] = {PART_STORAGE, PART_IO,  PART_CONTROL, PART_BUS,
				   PART_CONTROL_START, PART_BLE, PART_NONE};
#define REBOOTING_STARTS 5

enum outcome {
	OUTCOME_NOT_RUN,
	OUTCOME_REBOOTED,
	OUTCOME_RETURNED,
	OUTCOME_STUCK,
};

#define STATE_KEY "test/init"

struct init_state {
	uint8_t next;
	uint8_t running;
	uint8_t outcome[ARRAY_SIZE(starts)];
};

static struct init_state state;
static enum part failing;
static K_SEM_DEFINE(returned, 0, 1);

static int part_result(enum part part)
{
	return failing == part ? -EIO : 0;
}

int storage_init(void)
{
	return part_result(PART_STORAGE);
}

int io_init(void)
{
	return part_result(PART_IO);
}

int control_init(void)
{
	return part_result(PART_CONTROL);
}

int bus_init(void)
{
	return part_result(PART_BUS);
}

int control_start(void)
{
	return part_result(PART_CONTROL_START);
}

int ble_init(void)
{
	return part_result(PART_BLE);
}

static int state_loaded(const char *key, size_t len, settings_read_cb read_cb, void *cb_arg,
			void *param)
{
	ARG_UNUSED(key);
	ARG_UNUSED(param);

	if (len == sizeof(state) && read_cb(cb_arg, &state, sizeof(state)) == sizeof(state)) {
		return 0;
	}
	memset(&state, 0, sizeof(state));
	return 0;
}

static void state_save(void)
{
	zassert_ok(settings_save_one(STATE_KEY, &state, sizeof(state)));
}

K_THREAD_STACK_DEFINE(main_stack, 4096);
static struct k_thread main_thread;

static void run_main(void *p1, void *p2, void *p3)
{
	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	(void)app_main();
	k_sem_give(&returned);
}

/* Runs every start not run yet. A start that reboots ends this process; the next boot
 * records it and goes on with the next start.
 */
static void *init_setup(void)
{
	zassert_ok(settings_subsys_init());
	zassert_ok(settings_load_subtree_direct(STATE_KEY, state_loaded, NULL));

	if (state.running) {
		state.outcome[state.next] = OUTCOME_REBOOTED;
		state.running = 0;
		state.next++;
		state_save();
	}

	while (state.next < ARRAY_SIZE(starts)) {
		state.running = 1;
		state_save();

		failing = starts[state.next];
		k_sem_reset(&returned);
		k_thread_create(&main_thread, main_stack, K_THREAD_STACK_SIZEOF(main_stack),
				run_main, NULL, NULL, NULL, 5, 0, K_NO_WAIT);
		state.outcome[state.next] = k_sem_take(&returned, K_SECONDS(5)) == 0
						    ? OUTCOME_RETURNED
						    : OUTCOME_STUCK;
		k_thread_abort(&main_thread);

		state.running = 0;
		state.next++;
		state_save();
	}
	return NULL;
}

/* Leaves the flash file ready for a first boot next run. */
static void init_teardown(void *fixture)
{
	ARG_UNUSED(fixture);

	zassert_ok(settings_delete(STATE_KEY));
}

/* DFU-1: storage, terminals, control thread or battery bus failing to start reboots the
 * system (MCUboot reverts an image on test at that reboot); main() never returns without
 * the control thread, whose watchdog would otherwise never run.
 */
ZTEST(init, test_dfu_1_init_failure_reboots)
{
	for (size_t i = 0; i < REBOOTING_STARTS; i++) {
		zassert_equal(state.outcome[i], OUTCOME_REBOOTED,
			      "part %d failing: outcome %d, not a reboot", starts[i],
			      state.outcome[i]);
	}
}

/* The BMS protects the battery without Bluetooth: its failure does not reboot, and a clean
 * start returns from main() with the control thread running.
 */
ZTEST(init, test_dfu_1_bluetooth_failure_keeps_running)
{
	for (size_t i = REBOOTING_STARTS; i < ARRAY_SIZE(starts); i++) {
		zassert_equal(state.outcome[i], OUTCOME_RETURNED,
			      "part %d failing: outcome %d, main() did not return", starts[i],
			      state.outcome[i]);
	}
}

ZTEST_SUITE(init, NULL, init_setup, NULL, NULL, init_teardown);
