/* SPDX-License-Identifier: Apache-2.0 */
/* Copyright (c) 2026 The OpenBMS authors */

/*
 * Link test and measurement image of bms-ffi for the nRF52840 (Cortex-M4F, hard-float ABI),
 * built by scripts/target-build. Linking it with --gc-sections proves the static library
 * resolves against a bare-metal C program through bms.h and bms_port.h alone. Run in QEMU
 * (mps2-an386, a Cortex-M4F), it paints the stack, drives a full bank of 50 batteries and
 * reports through semihosting the deepest stack each library call used.
 */

#include <stdint.h>

#include "bms.h"
#include "bms_port.h"
#include "fixtures.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;

#define PAINT 0xdeadbeefu
#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define EXIT_OK 0x20026u     /* ADP_Stopped_ApplicationExit */
#define EXIT_FAILED 0x20023u /* ADP_Stopped_RunTimeErrorUnknown */

static int semihost(int op, const void *arg)
{
	register int r0 __asm__("r0") = op;
	register const void *r1 __asm__("r1") = arg;

	__asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
	return r0;
}

static void put(const char *s)
{
	semihost(SYS_WRITE0, s);
}

static void put_u32(uint32_t v)
{
	char buf[11];
	int i = 10;

	buf[i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	put(&buf[i]);
}

static __attribute__((noreturn)) void quit(uint32_t reason)
{
	semihost(SYS_EXIT, (const void *)reason);
	for (;;) {
	}
}

/* bms_port.h: no storage (every record absent, writes accepted), log lines to semihosting. */
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
	char line[128];
	size_t n = len < sizeof(line) - 2 ? len : sizeof(line) - 2;

	(void)level;
	for (size_t i = 0; i < n; i++) {
		line[i] = msg[i];
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	put("log: ");
	put(line);
}

/* Fills the free stack below the caller's frame with PAINT. */
static __attribute__((noinline)) void paint(void)
{
	uint32_t *sp = (uint32_t *)__builtin_frame_address(0);

	for (uint32_t *p = &_sstack; p < sp - 16; p++) {
		*p = PAINT;
	}
}

/* Bytes of stack used below @p top since the last paint(). */
static __attribute__((noinline)) uint32_t used_below(const void *top)
{
	const uint32_t *p = &_sstack;

	while (*p == PAINT) {
		p++;
	}
	return (uint32_t)((uintptr_t)top - (uintptr_t)p);
}

/*
 * Instruction counting: scripts/target-build runs QEMU with -icount shift=0, so virtual time
 * advances 1 ns per executed instruction, and SysTick (processor clock, 25 MHz on mps2-an386)
 * counts one tick per 40 instructions. calibrate() checks that ratio on a loop of known length.
 */
#define SYST_CSR (*(volatile uint32_t *)0xe000e010)
#define SYST_RVR (*(volatile uint32_t *)0xe000e014)
#define SYST_CVR (*(volatile uint32_t *)0xe000e018)
#define SYST_MASK 0xffffffu

static void ticks_start(void)
{
	SYST_RVR = SYST_MASK;
	SYST_CVR = 0;
	SYST_CSR = 0x5; /* enable, processor clock, no interrupt */
}

static uint32_t ticks_now(void)
{
	return SYST_CVR;
}

/* SysTick counts down; one measured stretch must stay below 2^24 ticks (16.7 M x 40 insns). */
static uint32_t ticks_since(uint32_t start)
{
	return (start - ticks_now()) & SYST_MASK;
}

/* Instructions per SysTick tick, measured on 2 x 400 000 instructions of a counted loop. */
static uint32_t calibrate(void)
{
	uint32_t n = 400000;
	uint32_t start = ticks_now();

	__asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
	return (800000 + ticks_since(start) / 2) / ticks_since(start);
}

static void report_insn(const char *what, uint64_t total_ticks, uint32_t count,
			uint32_t max_ticks, uint32_t insn_per_tick)
{
	put("insn ");
	put(what);
	put(": mean ");
	put_u32((uint32_t)(total_ticks * insn_per_tick / count));
	put(", max ");
	put_u32(max_ticks * insn_per_tick);
	put(" instructions (");
	put_u32(count);
	put(" calls)\n");
}

static void report(const char *what, uint32_t bytes)
{
	put("stack ");
	put(what);
	put(" ");
	put_u32(bytes);
	put(" bytes\n");
}

static void fail(const char *what)
{
	put("FAILED: ");
	put(what);
	put("\n");
	quit(EXIT_FAILED);
}

int main(void)
{
	const void *top = __builtin_frame_address(0);
	struct bms_inputs in = { .supply_mv = FIXTURE_BANK50_SUPPLY_MV };
	struct bms_outputs out;
	uint32_t open_bytes, feed_bytes = 0, step_bytes = 0, used;
	uint64_t step_ticks = 0, feed_ticks = 0;
	uint32_t step_max = 0, feed_max = 0, steps = 0, feeds = 0, t, insn_per_tick;
	struct bms *bms;

	ticks_start();
	insn_per_tick = calibrate();

	/* As the firmware does before opening (control.c). */
	if (bms_set_log_level(3) != BMS_OK) {
		fail("bms_set_log_level");
	}
	if (bms_set_readout_product_id(0xA3EC) != BMS_OK) {
		fail("bms_set_readout_product_id");
	}
	paint();
	bms = bms_open();
	open_bytes = used_below(top);
	if (bms == NULL) {
		fail("bms_open");
	}

	/* 60 s of the control loop: the bank reports once a second, a step every 100 ms. */
	for (uint64_t now_ms = 0; now_ms <= 60000; now_ms += 100) {
		if (now_ms % 1000 == 0) {
			paint();
			t = ticks_now();
			if (bms_feed_bus(bms, now_ms, fixture_bank50, sizeof(fixture_bank50)) != 50) {
				fail("bms_feed_bus");
			}
			t = ticks_since(t);
			feed_ticks += t;
			feed_max = t > feed_max ? t : feed_max;
			feeds++;
			used = used_below(top);
			feed_bytes = used > feed_bytes ? used : feed_bytes;
		}
		paint();
		t = ticks_now();
		if (bms_step(bms, now_ms, &in, &out) != BMS_OK) {
			fail("bms_step");
		}
		t = ticks_since(t);
		step_ticks += t;
		step_max = t > step_max ? t : step_max;
		steps++;
		used = used_below(top);
		step_bytes = used > step_bytes ? used : step_bytes;
	}
	if (!out.atd || !out.atc) {
		fail("outputs of a healthy 50-battery bank");
	}

	/* Every other function once, so that all of the library is linked and measured. */
	static uint8_t resp[BMS_GATT_RESPONSE_MAX];
	static uint8_t adv[BMS_ADVERTISEMENT_LEN];
	size_t len = 0;
	uint64_t deadline;
	uint32_t passkey;

	paint();
	for (uint8_t chr = 1; chr <= 6; chr++) {
		if (bms_gatt_request(bms, 60100, chr, false, false, NULL, 0, resp, sizeof(resp), &len) != BMS_OK) {
			fail("bms_gatt_request");
		}
	}
	report("bms_gatt_request", used_below(top));
	paint();
	if (bms_advertisement(bms, adv, sizeof(adv), &len) != BMS_OK || len != BMS_ADVERTISEMENT_LEN) {
		fail("bms_advertisement");
	}
	report("bms_advertisement", used_below(top));
	/* As dfu.c after a step; any verdict will do, the call links all of the self-check. */
	int32_t verdict = bms_self_check(bms, 60150, true, true);

	if (verdict != 0 && verdict != 1 && verdict != BMS_ETIMEDOUT) {
		fail("bms_self_check");
	}
	if (bms_dfu_event(bms, 60200, BMS_DFU_STARTED) != BMS_OK ||
	    bms_next_deadline_ms(bms, &deadline) != BMS_OK || bms_passkey(bms, &passkey) != BMS_OK ||
	    bms_close(bms) != BMS_OK) {
		fail("bms_dfu_event, bms_next_deadline_ms, bms_passkey, bms_close");
	}
	report("bms_open", open_bytes);
	report("bms_feed_bus", feed_bytes);
	report("bms_step", step_bytes);
	put("insn per SysTick tick (calibration, expected 40 with -icount shift=0): ");
	put_u32(insn_per_tick);
	put("\n");
	report_insn("bms_step (50 batteries)", step_ticks, steps, step_max, insn_per_tick);
	report_insn("bms_feed_bus (50 reports)", feed_ticks, feeds, feed_max, insn_per_tick);
	quit(EXIT_OK);
}

void reset_handler(void)
{
	uint32_t *src = &_sidata;

	for (uint32_t *dst = &_sdata; dst < &_edata;) {
		*dst++ = *src++;
	}
	for (uint32_t *dst = &_sbss; dst < &_ebss;) {
		*dst++ = 0;
	}
	/* Full access to the FPU (CP10, CP11), as Zephyr does with CONFIG_FPU. */
	*(volatile uint32_t *)0xe000ed88 |= 0xfu << 20;
	__asm__ volatile("dsb\n\tisb" ::: "memory");
	main();
	quit(EXIT_FAILED);
}

static void fault_handler(void)
{
	fail("fault");
}

__attribute__((section(".vectors"), used)) static const void *const vectors[16] = {
	&_estack,      reset_handler, fault_handler, fault_handler, fault_handler, fault_handler,
	fault_handler, 0,             0,             0,             0,             fault_handler,
	fault_handler, 0,             fault_handler, fault_handler,
};
