/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * app/src/main.c (built as app_main) against fakes of the parts it starts: each test makes
 * one part fail and runs app_main on its own thread. A reboot is recorded by the fake
 * sys_reboot(), which then parks the thread as a real reboot would end it.
 */

#include <errno.h>

#include <zephyr/kernel.h>
#include <zephyr/sys/reboot.h>
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

static enum part failing;
static atomic_t reboots;
static atomic_t returned;
static K_SEM_DEFINE(finished, 0, 1);

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

void sys_reboot(int type)
{
	ARG_UNUSED(type);

	atomic_inc(&reboots);
	k_sem_give(&finished);
	k_sleep(K_FOREVER);
	CODE_UNREACHABLE;
}

K_THREAD_STACK_DEFINE(main_stack, 4096);
static struct k_thread main_thread;

static void run_main(void *p1, void *p2, void *p3)
{
	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	(void)app_main();
	atomic_inc(&returned);
	k_sem_give(&finished);
}

/* Runs app_main with @p part failing until it returns or reboots. */
static void start_with_failing(enum part part)
{
	failing = part;
	atomic_clear(&reboots);
	atomic_clear(&returned);
	k_sem_reset(&finished);
	k_thread_create(&main_thread, main_stack, K_THREAD_STACK_SIZEOF(main_stack), run_main,
			NULL, NULL, NULL, 5, 0, K_NO_WAIT);
	zassert_ok(k_sem_take(&finished, K_SECONDS(5)), "app_main neither returned nor rebooted");
	k_thread_abort(&main_thread);
}

/* DFU-1: storage, terminals, control thread or battery bus failing to start reboots the
 * system (MCUboot reverts an image on test at that reboot); main() never returns without
 * the control thread, whose watchdog would otherwise never run.
 */
ZTEST(init, test_dfu_1_init_failure_reboots)
{
	static const enum part parts[] = {PART_STORAGE, PART_IO, PART_CONTROL, PART_BUS,
					  PART_CONTROL_START};

	for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
		start_with_failing(parts[i]);
		zassert_equal(atomic_get(&reboots), 1, "part %d failing: no reboot", parts[i]);
		zassert_equal(atomic_get(&returned), 0, "part %d failing: main() returned",
			      parts[i]);
	}
}

/* The BMS protects the battery without Bluetooth: its failure does not reboot, and a clean
 * start returns from main() with the control thread running.
 */
ZTEST(init, test_dfu_1_bluetooth_failure_keeps_running)
{
	start_with_failing(PART_BLE);
	zassert_equal(atomic_get(&reboots), 0);
	zassert_equal(atomic_get(&returned), 1);

	start_with_failing(PART_NONE);
	zassert_equal(atomic_get(&reboots), 0);
	zassert_equal(atomic_get(&returned), 1);
}

ZTEST_SUITE(init, NULL, NULL, NULL, NULL, NULL);
