/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The terminal block and the LEDs, all described by the openbms,bms-io devicetree node
 * (dts/bindings/openbms,bms-io.yaml): ATD, ATC and pre-alarm outputs, blue and red LEDs,
 * Remote H, Remote L and Bat+ through Zephyr voltage-divider nodes. Pattern of samples/basic/blinky and
 * samples/drivers/adc/adc_dt.
 */

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/adc.h>
#include <zephyr/drivers/adc/voltage_divider.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_io, CONFIG_BMS_LOG_LEVEL);

/* A build error here means the board has no enabled "openbms,bms-io" node: see docs/porting.md. */
#define BMS_IO DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)
BUILD_ASSERT(DT_NODE_EXISTS(BMS_IO), "no enabled openbms,bms-io devicetree node");

/* The three analog inputs: Zephyr voltage-divider nodes, named by the bms-io node. */
static const struct voltage_divider_dt_spec remote_h =
	VOLTAGE_DIVIDER_DT_SPEC_GET(DT_PHANDLE(BMS_IO, remote_h_divider));
static const struct voltage_divider_dt_spec remote_l =
	VOLTAGE_DIVIDER_DT_SPEC_GET(DT_PHANDLE(BMS_IO, remote_l_divider));
static const struct voltage_divider_dt_spec battery =
	VOLTAGE_DIVIDER_DT_SPEC_GET(DT_PHANDLE(BMS_IO, battery_divider));

#define HAS_FULL_OHMS(prop) DT_NODE_HAS_PROP(DT_PHANDLE(BMS_IO, prop), full_ohms)
BUILD_ASSERT(HAS_FULL_OHMS(remote_h_divider) && HAS_FULL_OHMS(remote_l_divider) &&
		     HAS_FULL_OHMS(battery_divider),
	     "every bms-io voltage divider needs full-ohms (the terminal voltage is scaled by it)");

static const struct gpio_dt_spec atd = GPIO_DT_SPEC_GET(BMS_IO, atd_gpios);
static const struct gpio_dt_spec atc = GPIO_DT_SPEC_GET(BMS_IO, atc_gpios);
static const struct gpio_dt_spec prealarm = GPIO_DT_SPEC_GET(BMS_IO, prealarm_gpios);
static const struct gpio_dt_spec led_blue = GPIO_DT_SPEC_GET(BMS_IO, led_blue_gpios);
static const struct gpio_dt_spec led_red = GPIO_DT_SPEC_GET(BMS_IO, led_red_gpios);

static atomic_t led_patterns; /* blue in bits 0..7, red in bits 8..15 (enum bms_led values) */
static atomic_t blink_lit;

static int led_level(uint8_t pattern)
{
	return pattern == BMS_LED_SOLID || (pattern == BMS_LED_BLINK && atomic_get(&blink_lit));
}

/* A blinking LED is lit BMS_LED_BLINK_ON_MS, then dark BMS_LED_BLINK_OFF_MS (the core's
 * timing, from bms.h); the timer runs one phase at a time.
 */
static void led_timer_expired(struct k_timer *timer)
{
	atomic_val_t patterns = atomic_get(&led_patterns);
	bool lit = !atomic_get(&blink_lit);

	atomic_set(&blink_lit, lit);
	(void)gpio_pin_set_dt(&led_blue, led_level(patterns & 0xff));
	(void)gpio_pin_set_dt(&led_red, led_level((patterns >> 8) & 0xff));
	k_timer_start(timer, K_MSEC(lit ? BMS_LED_BLINK_ON_MS : BMS_LED_BLINK_OFF_MS), K_NO_WAIT);
}

K_TIMER_DEFINE(led_timer, led_timer_expired, NULL);

static int read_mv(const struct voltage_divider_dt_spec *input, uint32_t *mv)
{
	int16_t raw;
	int32_t val;
	struct adc_sequence sequence = {
		.buffer = &raw,
		.buffer_size = sizeof(raw),
	};
	int err;

	err = adc_sequence_init_dt(&input->port, &sequence);
	if (err) {
		return err;
	}

	err = adc_read_dt(&input->port, &sequence);
	if (err) {
		return err;
	}

	val = raw;
	err = adc_raw_to_millivolts_dt(&input->port, &val);
	if (err) {
		return err;
	}

	err = voltage_divider_scale_dt(input, &val);
	if (err) {
		return err;
	}

	/* A single-ended input can read slightly below 0 V at the pin: that is 0 V. */
	*mv = (uint32_t)MAX(val, 0);

	return 0;
}

static int setup_output(const struct gpio_dt_spec *spec)
{
	if (!gpio_is_ready_dt(spec)) {
		return -ENODEV;
	}

	/* Inactive = free-floating until the core's first step (PROT-1). */
	return gpio_pin_configure_dt(spec, GPIO_OUTPUT_INACTIVE);
}

static int setup_input(const struct voltage_divider_dt_spec *input)
{
	if (!adc_is_ready_dt(&input->port)) {
		return -ENODEV;
	}

	return adc_channel_setup_dt(&input->port);
}

int io_init(void)
{
	const struct gpio_dt_spec *outputs[] = {&atd, &atc, &prealarm, &led_blue, &led_red};
	const struct voltage_divider_dt_spec *inputs[] = {&remote_h, &remote_l, &battery};
	int err;

	for (size_t i = 0; i < ARRAY_SIZE(outputs); i++) {
		err = setup_output(outputs[i]);
		if (err) {
			LOG_ERR("Output %s pin %u not set up (err %d)", outputs[i]->port->name,
				outputs[i]->pin, err);
			return err;
		}
	}

	for (size_t i = 0; i < ARRAY_SIZE(inputs); i++) {
		err = setup_input(inputs[i]);
		if (err) {
			LOG_ERR("ADC channel %u not set up (err %d)", inputs[i]->port.channel_id,
				err);
			return err;
		}
	}

	k_timer_start(&led_timer, K_MSEC(BMS_LED_BLINK_OFF_MS), K_NO_WAIT);

	return 0;
}

int io_read_inputs(struct bms_inputs *in)
{
	int err;

	err = read_mv(&remote_h, &in->remote_h_mv);
	if (err) {
		return err;
	}

	err = read_mv(&remote_l, &in->remote_l_mv);
	if (err) {
		return err;
	}

	return read_mv(&battery, &in->supply_mv);
}

int io_apply(const struct bms_outputs *out)
{
	int err;

	err = gpio_pin_set_dt(&atd, out->atd);
	if (err) {
		return err;
	}

	err = gpio_pin_set_dt(&atc, out->atc);
	if (err) {
		return err;
	}

	err = gpio_pin_set_dt(&prealarm, out->prealarm);
	if (err) {
		return err;
	}

	atomic_set(&led_patterns, (atomic_val_t)out->led_blue | ((atomic_val_t)out->led_red << 8));
	(void)gpio_pin_set_dt(&led_blue, led_level(out->led_blue));
	(void)gpio_pin_set_dt(&led_red, led_level(out->led_red));

	return 0;
}
