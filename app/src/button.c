/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The owner's button (BLE-2): the bms-io node's pairing-button, a key of a gpio-keys node.
 * Zephyr's gpio-keys driver debounces it and reports it through the input subsystem; both
 * edges go to the control thread with the time they happened. What a press means (open the
 * pairing window and blink the passkey, reset pairing when held 10 s) is the core's. Pattern
 * of samples/subsys/input/input_dump (INPUT_CALLBACK_DEFINE).
 */

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/input/input.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_button, CONFIG_BMS_LOG_LEVEL);

#define BMS_IO DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)
#define BUTTON DT_PHANDLE(BMS_IO, pairing_button)
#define BUTTON_KEYS DT_PARENT(BUTTON)

BUILD_ASSERT(DT_NODE_HAS_COMPAT(BUTTON_KEYS, gpio_keys),
	     "bms-io pairing-button must be a key of a gpio-keys node (docs/porting.md)");

static void button_event(struct input_event *evt, void *user_data)
{
	int err;

	ARG_UNUSED(user_data);

	if (evt->type != INPUT_EV_KEY || evt->code != DT_PROP(BUTTON, zephyr_code)) {
		return;
	}

	/* Waits for room: a lost release would make the next short press look like a 10 s hold
	 * (reset pairing), a lost press would swallow the owner's press.
	 */
	err = control_post_button(evt->value != 0, k_uptime_get());
	if (err) {
		LOG_ERR("Button edge not handed to the control thread (err %d)", err);
	}
}

INPUT_CALLBACK_DEFINE(DEVICE_DT_GET(BUTTON_KEYS), button_event, NULL);
