/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Test configuration only (twister-tests/ble_e2e): the end-to-end test presses the owner's
 * button by writing to the firmware's standard input, which native_sim's first UART reads
 * (CONFIG_UART_NATIVE_PTY_0_ON_STDINOUT in testcase.yaml): 'p' presses it, 'r' releases it,
 * on the GPIO emulator pin of the bms-io pairing-button (boards/native_sim.overlay), so the
 * edge goes through gpio-keys and app/src/button.c like a real press.
 */

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/drivers/gpio/gpio_emul.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>

#define BMS_IO DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)
#define BUTTON DT_PHANDLE(BMS_IO, pairing_button)

static const struct gpio_dt_spec button = GPIO_DT_SPEC_GET(BUTTON, gpios);
static const struct device *const input = DEVICE_DT_GET(DT_CHOSEN(zephyr_console));

static void button_from_stdin(void *p1, void *p2, void *p3)
{
	unsigned char c;

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	for (;;) {
		if (uart_poll_in(input, &c) != 0) {
			k_msleep(10);
			continue;
		}
		if (c == 'p' || c == 'r') {
			/* The pin is active high on native_sim: the level is the press. */
			int err = gpio_emul_input_set(button.port, button.pin, c == 'p');

			printk("e2e: button %s (err %d)\n", c == 'p' ? "pressed" : "released", err);
		}
	}
}

K_THREAD_DEFINE(e2e_button, 1024, button_from_stdin, NULL, NULL, NULL, 5, 0, 0);
