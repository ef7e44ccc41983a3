/* SPDX-License-Identifier: Apache-2.0 */
/* Copyright (c) 2026 The OpenBMS authors */

/*
 * The control-loop workload of scripts/ffi-bench: a full bank of 50 batteries (25.6 V, 8 cells
 * each) reporting once a second, one bms_step every 100 ms, for STEPS steps. Run under callgrind
 * with --toggle-collect on one function, it gives that function's instructions per call.
 */

#include <stdio.h>
#include <stdlib.h>

#include "bms.h"
#include "bms_port.h"
#include "fixtures.h"

#define STEPS 600

int bms_port_storage_read(const char *key, uint8_t *buf, size_t cap, size_t *len)
{
	(void)key, (void)buf, (void)cap, (void)len;
	return BMS_ENOENT;
}

int bms_port_storage_write(const char *key, const uint8_t *buf, size_t len)
{
	(void)key, (void)buf, (void)len;
	return 0;
}

int bms_port_storage_delete(const char *key)
{
	(void)key;
	return 0;
}

int bms_port_random(uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		buf[i] = (uint8_t)(i * 37u + 11u);
	}
	return 0;
}

void bms_port_log(uint8_t level, const char *msg, size_t len)
{
	(void)level, (void)msg, (void)len;
}

int main(void)
{
	struct bms *bms = bms_open();
	struct bms_inputs in = { .supply_mv = FIXTURE_BANK50_SUPPLY_MV };
	struct bms_outputs out;
	int reports = 0;

	if (bms == NULL) {
		return 1;
	}
	for (uint64_t i = 0; i < STEPS; i++) {
		uint64_t now_ms = i * 100;

		if (now_ms % 1000 == 0) {
			reports += bms_feed_bus(bms, now_ms, fixture_bank50, sizeof(fixture_bank50));
		}
		if (bms_step(bms, now_ms, &in, &out) != BMS_OK) {
			return 1;
		}
	}
	printf("steps %d reports %d atd %d atc %d\n", STEPS, reports, out.atd, out.atc);
	return (out.atd && out.atc && reports == 50 * STEPS / 10) ? 0 : 1;
}
