/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The terminal block and the LEDs, all described by the openbms,bms-io devicetree node
 * (dts/bindings/openbms,bms-io.yaml): ATD, ATC and pre-alarm outputs, blue and red LEDs,
 * Remote H, Remote L and Bat+ through their dividers. Pattern of samples/basic/blinky and
 * samples/drivers/adc/adc_dt.
 */

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/adc.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_io, CONFIG_BMS_LOG_LEVEL);

/* A build error here means the board has no enabled "openbms,bms-io" node: see docs/porting.md. */
#define BMS_IO DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)
BUILD_ASSERT(DT_NODE_EXISTS(BMS_IO), "no enabled openbms,bms-io devicetree node");

/* BmsLed::Blink in bms.h: 500 ms on, 500 ms off. */
#define LED_BLINK_HALF_PERIOD_MS 500

struct divider {
	uint32_t full_ohms;
	uint32_t output_ohms;
};

struct analog_input {
	struct adc_dt_spec adc;
	struct divider divider;
};

#define ANALOG_INPUT(name)                                                                         \
	{                                                                                          \
		.adc = ADC_DT_SPEC_GET_BY_NAME(BMS_IO, name),                                      \
		.divider = {                                                                       \
			.full_ohms = DT_PROP(BMS_IO, name##_full_ohms),                            \
			.output_ohms = DT_PROP(BMS_IO, name##_output_ohms),                        \
		},                                                                                 \
	}

BUILD_ASSERT(DT_PROP(BMS_IO, remote_h_output_ohms) > 0, "remote-h-output-ohms must not be 0");
BUILD_ASSERT(DT_PROP(BMS_IO, remote_l_output_ohms) > 0, "remote-l-output-ohms must not be 0");
BUILD_ASSERT(DT_PROP(BMS_IO, battery_output_ohms) > 0, "battery-output-ohms must not be 0");

static const struct analog_input remote_h = ANALOG_INPUT(remote_h);
static const struct analog_input remote_l = ANALOG_INPUT(remote_l);
static const struct analog_input battery = ANALOG_INPUT(battery);

static const struct gpio_dt_spec atd = GPIO_DT_SPEC_GET(BMS_IO, atd_gpios);
static const struct gpio_dt_spec atc = GPIO_DT_SPEC_GET(BMS_IO, atc_gpios);
static const struct gpio_dt_spec prealarm = GPIO_DT_SPEC_GET(BMS_IO, prealarm_gpios);
static const struct gpio_dt_spec led_blue = GPIO_DT_SPEC_GET(BMS_IO, led_blue_gpios);
static const struct gpio_dt_spec led_red = GPIO_DT_SPEC_GET(BMS_IO, led_red_gpios);

static atomic_t led_patterns; /* blue in bits 0..7, red in bits 8..15 (enum bms_led values) */
static bool blink_phase;

static int led_level(uint8_t pattern)
{
	return pattern == BMS_LED_SOLID || (pattern == BMS_LED_BLINK && blink_phase);
}

static void led_timer_expired(struct k_timer *timer)
{
	atomic_val_t patterns = atomic_get(&led_patterns);

	ARG_UNUSED(timer);

	blink_phase = !blink_phase;
	(void)gpio_pin_set_dt(&led_blue, led_level(patterns & 0xff));
	(void)gpio_pin_set_dt(&led_red, led_level((patterns >> 8) & 0xff));
}

K_TIMER_DEFINE(led_timer, led_timer_expired, NULL);

static int read_mv(const struct analog_input *input, uint32_t *mv)
{
	int16_t raw;
	int32_t val;
	struct adc_sequence sequence = {
		.buffer = &raw,
		.buffer_size = sizeof(raw),
	};
	int err;

	err = adc_sequence_init_dt(&input->adc, &sequence);
	if (err) {
		return err;
	}

	err = adc_read_dt(&input->adc, &sequence);
	if (err) {
		return err;
	}

	val = raw;
	err = adc_raw_to_millivolts_dt(&input->adc, &val);
	if (err) {
		return err;
	}

	/* A single-ended input can read slightly below 0 V at the pin: that is 0 V. */
	val = MAX(val, 0);
	*mv = (uint32_t)(((uint64_t)val * input->divider.full_ohms) / input->divider.output_ohms);

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

static int setup_input(const struct analog_input *input)
{
	if (!adc_is_ready_dt(&input->adc)) {
		return -ENODEV;
	}

	return adc_channel_setup_dt(&input->adc);
}

int io_init(void)
{
	const struct gpio_dt_spec *outputs[] = {&atd, &atc, &prealarm, &led_blue, &led_red};
	const struct analog_input *inputs[] = {&remote_h, &remote_l, &battery};
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
			LOG_ERR("ADC channel %u not set up (err %d)", inputs[i]->adc.channel_id, err);
			return err;
		}
	}

	k_timer_start(&led_timer, K_MSEC(LED_BLINK_HALF_PERIOD_MS),
		      K_MSEC(LED_BLINK_HALF_PERIOD_MS));

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
