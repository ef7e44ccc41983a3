/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Frames are built the way docs/battery-bus.md specifies (postcard body, CRC-16/IBM-3740 with
 * Zephyr's crc16_itu_t, COBS, 0x00 delimiter); bus_frame_fixture_matches_documented_bytes in
 * the bus suite checks this encoder against the documented example byte for byte.
 */

#include <string.h>

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/adc/adc_emul.h>
#include <zephyr/drivers/gpio/gpio_emul.h>
#include <zephyr/drivers/serial/uart_emul.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/crc.h>
#include <zephyr/ztest.h>

#include <bms_port.h>

#include "app.h"
#include "support.h"

#define BMS_IO DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)

static const struct device *const gpio_dev = DEVICE_DT_GET(DT_NODELABEL(gpio0));
static const struct device *const adc_dev = DEVICE_DT_GET(DT_NODELABEL(adc0));
static const struct device *const bus_dev = DEVICE_DT_GET(DT_PHANDLE(BMS_IO, battery_bus));

/* BLE fakes: these suites run the control loop without Bluetooth and record what it passes. */
static K_MUTEX_DEFINE(ble_lock);
static struct support_ble ble_seen;

bool ble_ready(void)
{
	return true;
}

bool ble_connected(void)
{
	return false;
}

static atomic_t status_subscribed;

void support_status_subscribed(bool subscribed)
{
	atomic_set(&status_subscribed, subscribed);
}

bool ble_status_subscribed(void)
{
	return atomic_get(&status_subscribed) != 0;
}

void ble_set_passkey(uint32_t passkey)
{
	k_mutex_lock(&ble_lock, K_FOREVER);
	ble_seen.passkey = passkey;
	ble_seen.passkey_updates++;
	k_mutex_unlock(&ble_lock);
}

void ble_set_name(const uint8_t *name, size_t len)
{
	k_mutex_lock(&ble_lock, K_FOREVER);
	len = MIN(len, sizeof(ble_seen.name) - 1);
	memcpy(ble_seen.name, name, len);
	ble_seen.name[len] = '\0';
	ble_seen.name_updates++;
	k_mutex_unlock(&ble_lock);
}

void ble_post_advertisement(const uint8_t *mfg, size_t len, bool low_power)
{
	uint8_t nonce[16];
	size_t nonce_len;

	ARG_UNUSED(low_power);

	k_mutex_lock(&ble_lock, K_FOREVER);
	if (ble_seen.adv_posts == 0) {
		/* Called on the control thread outside any bms_*() call: the storage port may be
		 * read directly here.
		 */
		ble_seen.nonce_stored_at_first_adv =
			bms_port_storage_read("bms/nonce", nonce, sizeof(nonce), &nonce_len) == 0;
	}
	ble_seen.adv_len = MIN(len, sizeof(ble_seen.adv));
	if (ble_seen.adv_len > 0) {
		memcpy(ble_seen.adv, mfg, ble_seen.adv_len);
	}
	ble_seen.adv_posts++;
	k_mutex_unlock(&ble_lock);
}

void ble_set_pairing_allowed(bool allowed, uint32_t results_handled)
{
	k_mutex_lock(&ble_lock, K_FOREVER);
	ble_seen.pairing_allowed = allowed;
	ble_seen.pairing_results_handled += results_handled;
	k_mutex_unlock(&ble_lock);
}

void ble_post_bond_action(const struct bms_bond_action *action)
{
	k_mutex_lock(&ble_lock, K_FOREVER);
	ble_seen.bond_action = *action;
	ble_seen.bond_actions++;
	k_mutex_unlock(&ble_lock);
}

void ble_set_read_protection(bool on)
{
	k_mutex_lock(&ble_lock, K_FOREVER);
	ble_seen.read_protection = on;
	k_mutex_unlock(&ble_lock);
}

void ble_post_status(const uint8_t *status, size_t len)
{
	ARG_UNUSED(status);
	ARG_UNUSED(len);

	k_mutex_lock(&ble_lock, K_FOREVER);
	ble_seen.status_posts++;
	k_mutex_unlock(&ble_lock);
}

struct test_report support_report(uint16_t cell_mv)
{
	struct test_report r = {
		.serial = 123456,
		.model = 0,
		.capacity_dah = 2000,
		.firmware = 0x0112,
		.cell_count = 4,
		.temp_count = 1,
		.temps_ddegc = {200},
		.current_ma = 0,
		.allowed_to_charge = true,
		.allowed_to_discharge = true,
	};

	for (int i = 0; i < 4; i++) {
		r.cells_mv[i] = cell_mv;
	}
	return r;
}

static size_t put_varint(uint8_t *p, uint32_t v)
{
	size_t n = 0;

	do {
		p[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v != 0) {
			p[n] |= 0x80;
		}
		n++;
	} while (v != 0);
	return n;
}

static uint32_t zigzag(int32_t v)
{
	return ((uint32_t)v << 1) ^ (uint32_t)(v >> 31);
}

size_t support_encode_frame(const struct test_report *r, uint8_t *out, size_t cap)
{
	uint8_t raw[128];
	size_t n = 0;
	size_t code_at = 0;
	size_t o = 1;
	uint16_t crc;

	raw[n++] = 0x01; /* version */
	raw[n++] = 0x01; /* kind: battery report */
	n += put_varint(&raw[n], r->serial);
	raw[n++] = r->model;
	n += put_varint(&raw[n], r->capacity_dah);
	n += put_varint(&raw[n], r->firmware);
	n += put_varint(&raw[n], r->cell_count);
	for (int i = 0; i < r->cell_count; i++) {
		n += put_varint(&raw[n], r->cells_mv[i]);
	}
	n += put_varint(&raw[n], r->temp_count);
	for (int i = 0; i < r->temp_count; i++) {
		n += put_varint(&raw[n], zigzag(r->temps_ddegc[i]));
	}
	n += put_varint(&raw[n], zigzag(r->current_ma));
	raw[n++] = r->allowed_to_charge;
	raw[n++] = r->allowed_to_discharge;
	raw[n++] = r->balancing;
	crc = crc16_itu_t(0xffff, raw, n);
	raw[n++] = (uint8_t)(crc & 0xff);
	raw[n++] = (uint8_t)(crc >> 8);

	/* COBS: each 0x00 becomes the distance to the next one; the end counts as one. */
	zassert_true(cap >= n + 2 + n / 254 + 1, "frame buffer too small");
	for (size_t i = 0; i < n; i++) {
		if (raw[i] == 0x00) {
			out[code_at] = (uint8_t)(o - code_at);
			code_at = o++;
		} else {
			out[o++] = raw[i];
			if (o - code_at == 0xff) {
				out[code_at] = 0xff;
				code_at = o++;
			}
		}
	}
	out[code_at] = (uint8_t)(o - code_at);
	out[o++] = 0x00;
	return o;
}

void support_bus_rx(const uint8_t *bytes, size_t len)
{
	uint32_t put = uart_emul_put_rx_data(bus_dev, (uint8_t *)bytes, len);

	zassert_equal(put, len, "UART emulator took %u of %zu bytes", put, len);
}

static atomic_t feed_cell_mv = ATOMIC_INIT(3300);
static atomic_t feed_paused;

static void feeder(void *p1, void *p2, void *p3)
{
	uint8_t frame[128];

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	for (;;) {
		if (!atomic_get(&feed_paused)) {
			struct test_report r = support_report((uint16_t)atomic_get(&feed_cell_mv));
			size_t len = support_encode_frame(&r, frame, sizeof(frame));

			(void)uart_emul_put_rx_data(bus_dev, frame, len);
		}
		k_sleep(K_MSEC(1000));
	}
}

K_THREAD_STACK_DEFINE(feeder_stack, 2048);
static struct k_thread feeder_thread;

void support_feeder_start(void)
{
	k_thread_create(&feeder_thread, feeder_stack, K_THREAD_STACK_SIZEOF(feeder_stack), feeder,
			NULL, NULL, NULL, 5, 0, K_NO_WAIT);
}

void support_feed_cells(uint16_t cell_mv)
{
	atomic_set(&feed_cell_mv, cell_mv);
}

void support_feed_pause(bool paused)
{
	atomic_set(&feed_paused, paused);
}

void support_terminal_mv(uint8_t adc_channel, uint32_t terminal_mv)
{
	/* The same divider as boards/native_sim.overlay: 1 MOhm over 51 kOhm. */
	uint32_t pin_mv = (uint32_t)(((uint64_t)terminal_mv * 51000U) / 1051000U);
	int err = adc_emul_const_value_set(adc_dev, adc_channel, pin_mv);

	zassert_ok(err, "ADC emulator channel %u not set (err %d)", adc_channel, err);
}

int support_button(bool pressed)
{
	return gpio_emul_input_set(gpio_dev, PIN_BUTTON, pressed ? 1 : 0);
}

int support_output(uint8_t pin)
{
	return gpio_emul_output_get(gpio_dev, pin);
}

int64_t support_wait_output(uint8_t pin, int level, int64_t timeout_ms)
{
	int64_t end = k_uptime_get() + timeout_ms;

	while (k_uptime_get() <= end) {
		if (support_output(pin) == level) {
			return k_uptime_get();
		}
		k_sleep(K_MSEC(100));
	}
	return -1;
}

struct support_ble support_ble(void)
{
	struct support_ble copy;

	k_mutex_lock(&ble_lock, K_FOREVER);
	copy = ble_seen;
	k_mutex_unlock(&ble_lock);
	return copy;
}
