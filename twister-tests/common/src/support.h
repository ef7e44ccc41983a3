/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Test support for the OpenBMS suites on native_sim: battery-bus frames, the emulated
 * terminal block (ADC and GPIO emulators) and fakes for the BLE side of app.h.
 */

#ifndef OPENBMS_TEST_SUPPORT_H_
#define OPENBMS_TEST_SUPPORT_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bms.h>

/* gpio0 pins and adc0 channels of boards/native_sim.overlay. */
#define PIN_ATD 1
#define PIN_ATC 2
#define PIN_PREALARM 3
#define PIN_LED_BLUE 4
#define PIN_LED_RED 5
#define PIN_BUTTON 6
#define ADC_REMOTE_H 0
#define ADC_REMOTE_L 1
#define ADC_BATTERY 2

/* One battery report, as in docs/battery-bus.md. */
struct test_report {
	uint32_t serial;
	uint8_t model; /* 0 = 12.8 V (4 cells), 1 = 25.6 V (8), 2 = 51.2 V (16) */
	uint16_t capacity_dah;
	uint16_t firmware;
	uint8_t cell_count;
	uint16_t cells_mv[16];
	uint8_t temp_count;
	int16_t temps_ddegc[4];
	int32_t current_ma;
	bool allowed_to_charge;
	bool allowed_to_discharge;
	bool balancing;
};

/* A healthy 12.8 V battery: 4 cells at @p cell_mv, 20 °C, idle, everything allowed. */
struct test_report support_report(uint16_t cell_mv);

/* Encodes @p r as a frame on the wire (COBS, CRC, 0x00 delimiter); returns its length. */
size_t support_encode_frame(const struct test_report *r, uint8_t *out, size_t cap);

/* Puts @p len bytes into the battery-bus UART emulator's receive FIFO. */
void support_bus_rx(const uint8_t *bytes, size_t len);

/* Starts the firmware as app/src/main.c does (storage, terminal block, control, battery bus,
 * then the control thread), asserting that each step succeeds; with @p feeder, also the
 * thread of support_feeder_start(). Only in suites built with control.c. storage_init() may
 * have run before (settings_subsys_init() initialises once).
 */
void support_start_firmware(bool feeder);

/* A thread that sends one report per second (with the cells of support_feed_cells()). */
void support_feeder_start(void);
void support_feed_cells(uint16_t cell_mv);
void support_feed_pause(bool paused);

/* Sets the voltage at a terminal in mV (the emulated ADC sees it through the divider). */
void support_terminal_mv(uint8_t adc_channel, uint32_t terminal_mv);

/* Presses (@p pressed) or releases the owner's button (gpio0 pin 6, gpio-keys): the edge
 * reaches the control thread after the gpio-keys debounce time.
 */
int support_button(bool pressed);

/* Physical level of an output pin on the GPIO emulator. */
int support_output(uint8_t pin);

/* Sleeps in 100 ms steps until pin @p pin reads @p level or @p timeout_ms passes; returns the
 * uptime at which it did, or -1.
 */
int64_t support_wait_output(uint8_t pin, int level, int64_t timeout_ms);

/* What the control thread gave the BLE fakes of app.h. */
struct support_ble {
	/* Passkey of the last ble_set_passkey(), and how many calls there were. */
	uint32_t passkey;
	uint32_t passkey_updates;
	/* The last advertisement (manufacturer data) and how many were posted. */
	uint8_t adv[BMS_ADVERTISEMENT_LEN];
	size_t adv_len;
	uint32_t adv_posts;
	/* Whether the nonce record ("bms/nonce") was in storage when the first one was posted. */
	bool nonce_stored_at_first_adv;
	/* The device name of the last ble_set_name() (NUL-terminated), and how many calls. */
	char name[BMS_DEVICE_NAME_MAX + 1];
	uint32_t name_updates;
	/* BLE-2: the last pairing_allowed, and the pairing results it reflected in all. */
	bool pairing_allowed;
	uint32_t pairing_results_handled;
	/* BLE-2: the last bond action posted, and how many there were. */
	struct bms_bond_action bond_action;
	uint32_t bond_actions;
	/* BLE-2: the last ble_set_read_protection(). */
	bool read_protection;
	/* BLE-1: how many status pages were posted for notification (ble_post_status). */
	uint32_t status_posts;
};

/* Whether a connection is subscribed to Status notifications, as ble_status_subscribed()
 * answers the control thread (none by default).
 */
void support_status_subscribed(bool subscribed);

/* A consistent copy of what the fakes recorded. */
struct support_ble support_ble(void);

#endif /* OPENBMS_TEST_SUPPORT_H_ */
