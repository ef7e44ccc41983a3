/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The control thread: the one owner of the library instance. It opens the instance on its own
 * stack (bms_open() is the deepest library call, docs/ffi.md), then sleeps (k_poll) until the
 * core's next deadline, battery-bus bytes in the ring buffer, or a message from another thread.
 * Bus bytes go to the core as they are; at the battery line's deadline the core says which
 * request to send the packs (bms_line_poll) and bus.c sends it. A step reads the analog inputs,
 * calls bms_step(), applies the outputs and LEDs, hands changed advertisement and status data to
 * ble.c's work items, and feeds the task watchdog. Every decision is the core's; this file
 * only moves data.
 *
 * BLE-2: the button's edges (button.c), the end of each pairing and the BLE stack's bonds
 * (ble.c) come in as messages; after each, a step runs at once, so that whether a new pairing
 * may start (pairing_allowed, handed to ble.c with how many pairing results it reflects) and
 * the blue LED follow without waiting for the next tick. A bond action of the core goes to
 * ble.c, which carries it out with the stack and reports the bonds again.
 */

#include <string.h>

#include <zephyr/device.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/util.h>
#include <zephyr/task_wdt/task_wdt.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_control, CONFIG_BMS_LOG_LEVEL);

BUILD_ASSERT(CONFIG_BMS_CONTROL_STACK_SIZE >= 8192,
	     "bms_open() runs on the control thread: keep 8 KiB (docs/ffi.md, stack)");

/* Battery-bus bytes taken from the ring buffer per bms_feed_bus() call. */
#define BUS_READ_LEN 64

enum ctrl_msg_type {
	CTRL_MSG_DFU,
	CTRL_MSG_GATT,
	CTRL_MSG_BUTTON,
	CTRL_MSG_PAIRING,
	CTRL_MSG_BONDS,
	CTRL_MSG_FLUSH,
};

struct gatt_call {
	uint8_t characteristic;
	bool write;
	bool authenticated;
	const uint8_t *req;
	size_t req_len;
	uint8_t *resp;
	size_t resp_cap;
	size_t resp_len;
	int32_t rc;
	struct k_sem done;
};

struct ctrl_msg {
	enum ctrl_msg_type type;
	union {
		bms_dfu_t dfu;
		struct gatt_call *gatt;
		struct {
			uint64_t at_ms;
			bool pressed;
		} button;
		bool pairing_success;
		struct {
			struct bms_bond list[BMS_MAX_BONDS];
			uint8_t count;
		} bonds;
	};
};

K_MSGQ_DEFINE(ctrl_msgq, sizeof(struct ctrl_msg), 8, 4);
K_THREAD_STACK_DEFINE(control_stack, CONFIG_BMS_CONTROL_STACK_SIZE);

static struct k_thread control_thread_data;
static K_SEM_DEFINE(control_opened, 0, 1);
static int control_open_err;
static struct bms *bms;
static int wdt_channel = -1;
static atomic_t steps;
static atomic_t self_check_verdict;
static K_SEM_DEFINE(self_check_decided, 0, 1);
/* What ble.c advertises: nothing yet, the readout, or no readout (BLE-3: not available). */
static enum { ADV_NOTHING, ADV_READOUT, ADV_NO_READOUT } advertised;
static bool advertised_low_power;
/* BLE-2: pairing results handled since pairing_allowed was last handed to ble.c. */
static uint32_t pairing_results_handled;
/* BLE-2: the bonds were reported once; until then the core does not know whether the
 * power-up window (no bond yet) applies, so nothing pairs.
 */
static bool bonds_known;

static void apply_passkey(void)
{
	uint32_t passkey;
	int32_t rc;

	rc = bms_passkey(bms, &passkey);
	if (rc == BMS_EAGAIN) {
		/* A fault of the stored secrets (BLE-2): nothing pairs until the button reset. */
		LOG_WRN("No usable passkey: pairing refused until the button is held 10 s");
		ble_set_passkey(BLE_NO_PASSKEY);
		return;
	}
	if (rc) {
		LOG_ERR("Passkey not read (err %d)", rc);
		return;
	}
	ble_set_passkey(passkey);
}

/* BLE-2: a bond action the core asks for goes to ble.c, which carries it out. */
static void take_bond_action(void)
{
	struct bms_bond_action action;
	int32_t rc;

	rc = bms_bond_action(bms, &action);
	if (rc) {
		LOG_ERR("Bond action not read (err %d)", rc);
		return;
	}
	if (action.kind != BMS_BOND_ACTION_KIND_NONE) {
		ble_post_bond_action(&action);
	}
}

/* BLE-1: the owner's device name, advertised. */
static void apply_name(void)
{
	uint8_t name[BMS_DEVICE_NAME_MAX + 1];
	size_t len = 0;
	int32_t rc;

	rc = bms_device_name(bms, name, sizeof(name), &len);
	if (rc) {
		LOG_ERR("Device name not read (err %d)", rc);
		return;
	}
	ble_set_name(name, len);
}

static void handle_gatt(struct gatt_call *call, uint64_t now_ms)
{
	call->resp_len = 0;
	call->rc = bms_gatt_request(bms, now_ms, call->characteristic, call->write,
				    call->authenticated, call->req, call->req_len, call->resp,
				    call->resp_cap, &call->resp_len);

	/* A control-point command may have changed the passkey (ChangePasskey, BLE-2). */
	if (call->rc == BMS_OK && call->write && call->characteristic == BMS_CHR_CONTROL_POINT) {
		apply_passkey();
	}
	/* An accepted rename: advertise the new name. */
	if (call->rc == BMS_OK && call->write && call->characteristic == BMS_CHR_DEVICE_NAME &&
	    call->resp_len > BMS_RESPONSE_STATUS_OFFSET &&
	    call->resp[BMS_RESPONSE_STATUS_OFFSET] == BMS_STATUS_OK) {
		apply_name();
	}
	/* Before the answer: ble.c still knows which phone asked (ChangePasskey keeps its bond). */
	take_bond_action();
	k_sem_give(&call->done);
}

static void handle_button(bool pressed, uint64_t at_ms)
{
	int32_t rc = bms_button(bms, at_ms, pressed);

	if (rc < 0) {
		LOG_ERR("Button edge refused (err %d)", rc);
	} else if (rc > 0) {
		/* The window opened (with a new passkey if the old one saw too many failed
		 * attempts) or pairing was reset (a new passkey and a bond action removing every
		 * bond): the host pairs with the passkey the core shows now.
		 */
		apply_passkey();
	}
}

/* Handles one message; returns whether a step should run now (the pairing state or the LEDs
 * may have changed).
 */
static bool handle_msg(struct ctrl_msg *msg, uint64_t now_ms)
{
	bool step_now = false;
	int32_t rc;

	switch (msg->type) {
	case CTRL_MSG_DFU:
		rc = bms_dfu_event(bms, now_ms, msg->dfu);
		if (rc) {
			LOG_ERR("DFU event %u refused (err %d)", msg->dfu, rc);
		}
		break;
	case CTRL_MSG_GATT:
		handle_gatt(msg->gatt, now_ms);
		break;
	case CTRL_MSG_BUTTON:
		handle_button(msg->button.pressed, msg->button.at_ms);
		step_now = true;
		break;
	case CTRL_MSG_PAIRING:
		rc = bms_pairing_result(bms, now_ms, msg->pairing_success);
		if (rc) {
			LOG_ERR("Pairing result refused (err %d)", rc);
		}
		pairing_results_handled++;
		step_now = true;
		break;
	case CTRL_MSG_BONDS:
		rc = bms_bonds_set(bms, msg->bonds.list, msg->bonds.count);
		if (rc) {
			LOG_ERR("%u bonds refused (err %d)", msg->bonds.count, rc);
		} else {
			bonds_known = true;
		}
		step_now = true;
		break;
	case CTRL_MSG_FLUSH:
		rc = bms_flush(bms, now_ms);
		if (rc) {
			LOG_ERR("Records not flushed (err %d)", rc);
		}
		break;
	}

	/* The button may have asked for one (a GATT request's is taken before it is answered). */
	take_bond_action();
	return step_now;
}

static void publish(const struct bms_outputs *out, uint64_t now_ms)
{
	static uint8_t buf[BMS_GATT_RESPONSE_MAX];
	size_t len = 0;
	int32_t rc;

	/* Only after a step: bms_step() has persisted the nonce reservation the packet uses
	 * (BLE-3), and the first packet goes out even if nothing changed since bms_open(). A
	 * change of low-power mode only changes the interval: the unchanged state gives the
	 * same packet, no new nonce.
	 */
	if (out->adv_changed || advertised != ADV_READOUT ||
	    out->low_power != advertised_low_power) {
		rc = bms_advertisement(bms, buf, sizeof(buf), &len);
		if (rc == BMS_OK) {
			ble_post_advertisement(buf, len, out->low_power);
			advertised = ADV_READOUT;
			advertised_low_power = out->low_power;
		} else if (rc == BMS_EAGAIN) {
			/* No usable key, or no stored nonce for the new values: the readout is
			 * not available, and the last packet is withdrawn rather than left stale.
			 * Tried again at every step.
			 */
			if (advertised != ADV_NO_READOUT || out->low_power != advertised_low_power) {
				LOG_WRN("Instant Readout not available: not advertised");
				ble_post_advertisement(NULL, 0, out->low_power);
				advertised = ADV_NO_READOUT;
				advertised_low_power = out->low_power;
			}
		} else {
			LOG_ERR("Advertisement not built (err %d)", rc);
		}
	}

	/* Built as for an authenticated link: with read protection on, an unauthenticated
	 * request gets NotAuthenticated and nobody, the owner included, was notified. ble.c
	 * notifies only the links that may read the page (notify_status()).
	 */
	if (out->status_changed && ble_status_subscribed()) {
		rc = bms_gatt_request(bms, now_ms, BMS_CHR_STATUS, false, true, NULL, 0, buf,
				      sizeof(buf), &len);
		if (rc == BMS_OK && len > BMS_RESPONSE_STATUS_OFFSET &&
		    buf[BMS_RESPONSE_STATUS_OFFSET] == BMS_STATUS_OK) {
			ble_post_status(buf, len);
		}
	}
}

static uint64_t step(uint64_t now_ms)
{
	struct bms_inputs in = {0};
	struct bms_outputs out = {0};
	uint64_t deadline = BMS_NO_DEADLINE;
	uint64_t next;
	int err;

	err = io_read_inputs(&in);
	if (err) {
		/* No valid measurement: skip the step; the watchdog is not fed, so a stuck ADC
		 * ends in a reset with every output free-floating.
		 */
		LOG_ERR("Inputs not read (err %d)", err);
		return now_ms + CONFIG_BMS_CONTROL_WDT_MS / 4;
	}
	in.app_connected = ble_connected();

	err = bms_step(bms, now_ms, &in, &out);
	if (err) {
		LOG_ERR("Step failed (err %d)", err);
		return now_ms + CONFIG_BMS_CONTROL_WDT_MS / 4;
	}

	err = io_apply(&out);
	if (err) {
		LOG_ERR("Outputs not applied (err %d)", err);
		return now_ms + CONFIG_BMS_CONTROL_WDT_MS / 4;
	}
	if (atomic_get(&steps) == 0) {
		/* The outputs' drop at a restart lasts until here (plus MCUboot's part, before the
		 * application's uptime starts): docs/firmware.md.
		 */
		LOG_INF("First step %u ms after start", (uint32_t)now_ms);
	}
	retained_save(bms);

	/* BLE-2: the pairing state after every result handled so far. */
	ble_set_pairing_allowed(out.pairing_allowed && bonds_known, pairing_results_handled);
	pairing_results_handled = 0;
	ble_set_read_protection(out.read_protection);
	if (out.bond_action_pending) {
		take_bond_action();
	}

	publish(&out, now_ms);
	(void)task_wdt_feed(wdt_channel);
	atomic_inc(&steps);

	/* DFU-1: the core judges the running image. Storage is up (main() stops when
	 * storage_init() fails); whether records really get written the core sees itself.
	 */
	if (atomic_get(&self_check_verdict) == 0) {
		int32_t verdict = bms_self_check(bms, now_ms, ble_ready(), true);

		if (verdict != 0) {
			atomic_set(&self_check_verdict, verdict);
			k_sem_give(&self_check_decided);
		}
	}

	next = now_ms + MAX(out.tick_ms, 1U);
	if (bms_next_deadline_ms(bms, &deadline) == BMS_OK && deadline < next) {
		next = MAX(deadline, now_ms + 1);
	}
	/* Wake often enough to feed the watchdog even in the slowest low-power tick. */
	return MIN(next, now_ms + CONFIG_BMS_CONTROL_WDT_MS / 2);
}

/* The battery line of the devicetree. A line the core refuses (it logs why) stays the OpenBMS
 * bus: no pack is read, so no battery joins and every output stays free-floating.
 */
static void configure_line(void)
{
	const struct bus_line line = bus_line();
	int32_t rc;

	rc = bms_line_configure(bms, line.protocol, line.baud, line.addresses, line.count);
	if (rc) {
		LOG_ERR("Battery line (devicetree: %s, %u bit/s, %zu packs) refused (err %d)",
			line.name, line.baud, line.count, rc);
	}
}

/* Sends the request the battery line's protocol asks for now; returns when to ask again. */
static uint64_t poll_line(uint64_t now_ms)
{
	uint8_t tx[BMS_LINE_REQUEST_MAX];
	size_t len = 0;
	uint64_t next = BMS_NO_DEADLINE;
	int32_t rc;
	int err;

	rc = bms_line_poll(bms, now_ms, tx, sizeof(tx), &len, &next);
	if (rc) {
		LOG_ERR("Battery line not polled (err %d)", rc);
		return now_ms + CONFIG_BMS_CONTROL_WDT_MS / 4;
	}
	if (len > 0) {
		/* Unsent, the request counts as unanswered: the core asks again. */
		err = bus_send(tx, len);
		if (err) {
			LOG_WRN("Battery line request not sent (err %d)", err);
		}
	}
	return next == BMS_NO_DEADLINE ? next : MAX(next, now_ms + 1);
}

static int open_instance(void)
{
	if (bms_set_readout_product_id(CONFIG_BMS_READOUT_PRODUCT_ID) != BMS_OK) {
		LOG_WRN("CONFIG_BMS_READOUT_PRODUCT_ID 0x%04x is no product id: default used",
			CONFIG_BMS_READOUT_PRODUCT_ID);
	}
	/* PROT-1 (rev 2): after a warm reset the first step drives the outputs again. */
	retained_restore();
	bms = bms_open();
	if (bms == NULL) {
		LOG_ERR("Library instance already open");
		return -EALREADY;
	}

	/* Before ble_init(): pairing must never run with a passkey other than the stored one. */
	apply_passkey();
	/* Given to the host once it is up (ble_init loads the stack's own copy first). */
	apply_name();

	configure_line();

	wdt_channel = task_wdt_add(CONFIG_BMS_CONTROL_WDT_MS, NULL, NULL);
	if (wdt_channel < 0) {
		LOG_ERR("Task watchdog channel not added (err %d)", wdt_channel);
		return wdt_channel;
	}

	return 0;
}

/* Feeds every battery-bus byte received so far to the core; returns whether there were any. */
static bool feed_bus(void)
{
	uint8_t bytes[BUS_READ_LEN];
	size_t len;
	int32_t rc;
	bool fed = false;

	while ((len = bus_read(bytes, sizeof(bytes))) > 0) {
		fed = true;
		rc = bms_feed_bus(bms, k_uptime_get(), bytes, len);
		if (rc < 0) {
			LOG_ERR("Bus bytes not fed (err %d)", rc);
		}
	}
	return fed;
}

static void control_thread(void *p1, void *p2, void *p3)
{
	struct k_poll_event events[2];
	struct ctrl_msg msg;
	uint64_t next = k_uptime_get();
	uint64_t line_next = next;

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	control_open_err = open_instance();
	k_sem_give(&control_opened);
	if (control_open_err) {
		return;
	}

	k_poll_event_init(&events[0], K_POLL_TYPE_MSGQ_DATA_AVAILABLE, K_POLL_MODE_NOTIFY_ONLY,
			  &ctrl_msgq);
	bus_poll_event_init(&events[1]);

	for (;;) {
		/* -EAGAIN at the deadline; either way everything that is ready is handled. */
		(void)k_poll(events, ARRAY_SIZE(events), K_TIMEOUT_ABS_MS(MIN(next, line_next)));
		events[0].state = K_POLL_STATE_NOT_READY;
		events[1].state = K_POLL_STATE_NOT_READY;

		bool fed = feed_bus();
		bool step_now = false;

		while (k_msgq_get(&ctrl_msgq, &msg, K_NO_WAIT) == 0) {
			step_now |= handle_msg(&msg, k_uptime_get());
		}

		uint64_t now = k_uptime_get();

		/* A complete answer brings the next request forward: ask the core again. */
		if (fed || now >= line_next) {
			line_next = poll_line(now);
		}
		if (now >= next || step_now) {
			next = step(now);
		}
	}
}

int control_init(void)
{
	const struct device *hw_wdt = DEVICE_DT_GET_OR_NULL(DT_ALIAS(watchdog0));
	int err;

	if (hw_wdt != NULL && !device_is_ready(hw_wdt)) {
		LOG_WRN("Hardware watchdog not ready, task watchdog without fallback");
		hw_wdt = NULL;
	}

	err = task_wdt_init(hw_wdt);
	if (err) {
		LOG_ERR("Task watchdog init failed (err %d)", err);
		return err;
	}

	return 0;
}

int control_start(void)
{
	k_thread_create(&control_thread_data, control_stack, K_THREAD_STACK_SIZEOF(control_stack),
			control_thread, NULL, NULL, NULL, CONFIG_BMS_CONTROL_PRIORITY, 0, K_NO_WAIT);
	k_thread_name_set(&control_thread_data, "bms_control");

	/* bms_open() only reads a few records from flash: it always returns. */
	k_sem_take(&control_opened, K_FOREVER);

	return control_open_err;
}

int control_post_dfu(bms_dfu_t event)
{
	struct ctrl_msg msg = {.type = CTRL_MSG_DFU, .dfu = event};

	/* Update progress must not be lost (PROT-10): wait for room, the owner drains fast. */
	return k_msgq_put(&ctrl_msgq, &msg, K_FOREVER);
}

int control_post_button(bool pressed, int64_t at_ms)
{
	struct ctrl_msg msg = {
		.type = CTRL_MSG_BUTTON,
		.button = {.at_ms = (uint64_t)MAX(at_ms, 0), .pressed = pressed},
	};

	return k_msgq_put(&ctrl_msgq, &msg, K_FOREVER);
}

int control_post_pairing_result(bool success)
{
	struct ctrl_msg msg = {.type = CTRL_MSG_PAIRING, .pairing_success = success};

	/* A lost failure would be a free guess at the passkey: wait for room. */
	return k_msgq_put(&ctrl_msgq, &msg, K_FOREVER);
}

int control_post_bonds(const struct bms_bond *bonds, size_t count)
{
	struct ctrl_msg msg = {.type = CTRL_MSG_BONDS};

	if (count > ARRAY_SIZE(msg.bonds.list)) {
		LOG_ERR("%zu bonds, at most %u reported", count, BMS_MAX_BONDS);
		return -EINVAL;
	}
	if (count > 0) {
		memcpy(msg.bonds.list, bonds, count * sizeof(bonds[0]));
	}
	msg.bonds.count = (uint8_t)count;

	return k_msgq_put(&ctrl_msgq, &msg, K_FOREVER);
}

int control_post_flush(void)
{
	struct ctrl_msg msg = {.type = CTRL_MSG_FLUSH};

	/* From the Bluetooth host's disconnect callback: never wait; a missed flush only
	 * delays the write to its coalescing deadline (SET-2).
	 */
	return k_msgq_put(&ctrl_msgq, &msg, K_NO_WAIT);
}

int control_gatt(uint8_t characteristic, bool write, bool authenticated, const uint8_t *req,
		 size_t req_len, uint8_t *resp, size_t resp_cap, size_t *resp_len)
{
	struct gatt_call call = {
		.characteristic = characteristic,
		.write = write,
		.authenticated = authenticated,
		.req = req,
		.req_len = req_len,
		.resp = resp,
		.resp_cap = resp_cap,
	};
	struct ctrl_msg msg = {.type = CTRL_MSG_GATT, .gatt = &call};
	int err;

	k_sem_init(&call.done, 0, 1);

	err = k_msgq_put(&ctrl_msgq, &msg, K_FOREVER);
	if (err) {
		return err;
	}

	/* The control thread always answers: if it stalled, the task watchdog resets the
	 * system, so waiting here cannot outlive `call`.
	 */
	k_sem_take(&call.done, K_FOREVER);
	*resp_len = call.resp_len;

	return call.rc;
}

uint32_t control_steps(void)
{
	return (uint32_t)atomic_get(&steps);
}

int control_self_check_wait(k_timeout_t timeout)
{
	/* Given once, when the verdict is made; it never changes after that. */
	if (k_sem_take(&self_check_decided, timeout) == 0) {
		k_sem_give(&self_check_decided);
	}

	return (int)atomic_get(&self_check_verdict);
}
