/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * gatt.c on the real control thread and core, without a Bluetooth controller: each
 * struct gatt_session stands for one connection, and the ATT error a request would get is
 * what gatt_write() returns. Battery reports enter through the UART emulator as in the bus
 * suite. Requests and pages are the bytes of docs/protocol.md.
 *
 * BLE-2: the owner's button is pressed on the GPIO emulator (gpio-keys, app/src/button.c);
 * pairing results and the stack's bonds are posted as ble.c posts them, and what the control
 * thread hands back (pairing_allowed, bond actions) is what the fakes of support.c record.
 * The tests share one core: each reports the bonds it needs first.
 */

#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/ztest.h>

#include "app.h"
#include "support.h"

/* Protocol statuses (docs/protocol.md, "Status codes"). */

/* Page bytes after [version, status]: BatteryPage starts with `number: u8`; BankPage with
 * `balancer` (a one-byte enum) and `batteries: u8`.
 */
#define BATTERY_PAGE_NUMBER 2
#define BANK_PAGE_BATTERIES 3

#define SERIAL_A 123456
#define SERIAL_B 123457

static uint8_t resp[BMS_GATT_RESPONSE_MAX];

/* Two peers' identity addresses (random static: type 1). */
static const struct bms_bond phone = {.address_type = 1,
				      .address = {0x11, 0x22, 0x33, 0x44, 0x55, 0xC6}};
static const struct bms_bond tablet = {.address_type = 1,
				       .address = {0x01, 0x02, 0x03, 0x04, 0x05, 0xD7}};

static bool pairing_allowed(void)
{
	return support_ble().pairing_allowed;
}

static bool read_protection(void)
{
	return support_ble().read_protection;
}

/* Waits up to @p timeout_ms for what the BLE side was told, read by @p flag, to be @p value;
 * returns whether it was.
 */
static bool ble_flag_becomes(bool (*flag)(void), bool value, int timeout_ms)
{
	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		if (flag() == value) {
			return true;
		}
		k_sleep(K_MSEC(10));
	}
	return false;
}

static bool pairing_allowed_becomes(bool allowed, int timeout_ms)
{
	return ble_flag_becomes(pairing_allowed, allowed, timeout_ms);
}

/* A press of the owner's button lasting @p held_ms. */
static void press_button(int held_ms)
{
	zassert_ok(support_button(true));
	k_sleep(K_MSEC(held_ms));
	zassert_ok(support_button(false));
}

/* Waits up to 1 s for a bond action after @p before actions; returns its kind, or -1. */
static int bond_action_after(uint32_t before)
{
	for (int i = 0; i < 100; i++) {
		struct support_ble seen = support_ble();

		if (seen.bond_actions > before) {
			return seen.bond_action.kind;
		}
		k_sleep(K_MSEC(10));
	}
	return -1;
}

static void *gatt_setup(void)
{
	support_terminal_mv(ADC_BATTERY, 4 * 3300);
	support_terminal_mv(ADC_REMOTE_H, 0);
	support_terminal_mv(ADC_REMOTE_L, 0);

	support_start_firmware(false);
	return NULL;
}

static void send_report(uint32_t serial)
{
	struct test_report r = support_report(3300);
	uint8_t frame[128];
	size_t len;

	r.serial = serial;
	len = support_encode_frame(&r, frame, sizeof(frame));
	support_bus_rx(frame, len);
}

/* Two 12.8 V batteries in parallel, both reporting, until the Bank page counts them. */
static void bank_of_two(void)
{
	struct gatt_session s;
	const uint8_t *value;
	size_t len;

	gatt_session_reset(&s);
	for (int i = 0; i < 20; i++) {
		send_report(SERIAL_A);
		send_report(SERIAL_B);
		k_sleep(K_MSEC(200));
		zassert_ok(gatt_read(&s, BMS_CHR_BANK, false, 0, &value, &len));
		zassert_true(len > BANK_PAGE_BATTERIES, "bank page of %zu bytes", len);
		if (value[BANK_PAGE_BATTERIES] == 2) {
			return;
		}
	}
	ztest_test_fail();
}

static uint8_t battery_read(struct gatt_session *s)
{
	const uint8_t *value;
	size_t len;

	zassert_ok(gatt_read(s, BMS_CHR_BATTERY, false, 0, &value, &len));
	zassert_true(len > BATTERY_PAGE_NUMBER, "battery page of %zu bytes", len);
	zassert_equal(value[BMS_RESPONSE_STATUS_OFFSET], BMS_STATUS_OK, "status %u",
		      value[BMS_RESPONSE_STATUS_OFFSET]);
	return value[BATTERY_PAGE_NUMBER];
}

static int write_req(struct gatt_session *s, uint8_t chr, bool authenticated,
		     const uint8_t *req, size_t req_len)
{
	size_t len = 0;

	memset(resp, 0, sizeof(resp));
	return gatt_write(s, chr, authenticated, req, req_len, resp, sizeof(resp), &len);
}

/* BLE-1: each connection keeps the battery it selected: reads pass it (battery 0 before any
 * selection), another connection is not affected, and a refused selection (NoSuchBattery,
 * ATT error 0x88) keeps the previous one.
 */
ZTEST(gatt, test_ble_1_battery_selector_kept_per_connection)
{
	static const uint8_t select_1[] = {0x01, 0x01};
	static const uint8_t select_9[] = {0x01, 0x09};
	struct gatt_session phone;
	struct gatt_session tablet;

	gatt_session_reset(&phone);
	gatt_session_reset(&tablet);
	bank_of_two();

	zassert_equal(battery_read(&phone), 0, "battery 0 before any selection");

	zassert_equal(write_req(&phone, BMS_CHR_BATTERY, false, select_1, sizeof(select_1)), 0,
		      "selecting an existing battery is open (BLE-2) and accepted");
	zassert_equal(resp[BATTERY_PAGE_NUMBER], 1, "the write answers with the page");
	zassert_equal(battery_read(&phone), 1, "selection not kept");
	zassert_equal(battery_read(&tablet), 0, "selection leaked to another connection");

	zassert_equal(write_req(&phone, BMS_CHR_BATTERY, false, select_9, sizeof(select_9)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_NO_SUCH_BATTERY));
	zassert_equal(battery_read(&phone), 1, "a refused selection replaced the kept one");
}

/* BLE-1: a long read (ATT Read Blob) is cut from the page built at offset 0, even when the
 * state changed in between, so the client reassembles one consistent page.
 */
ZTEST(gatt, test_ble_1_long_read_is_one_page)
{
	struct gatt_session s;
	uint8_t first[BMS_GATT_RESPONSE_MAX];
	const uint8_t *value;
	size_t first_len;
	size_t len;

	gatt_session_reset(&s);
	zassert_ok(gatt_read(&s, BMS_CHR_BANK, false, 0, &value, &first_len));
	memcpy(first, value, first_len);

	/* A third battery changes the Bank page. */
	for (int i = 0; i < 5; i++) {
		send_report(SERIAL_B + 1);
		k_sleep(K_MSEC(200));
	}

	zassert_ok(gatt_read(&s, BMS_CHR_BANK, false, 10, &value, &len));
	zassert_equal(len, first_len);
	zassert_mem_equal(value, first, first_len, "blob read from a newer page");

	zassert_ok(gatt_read(&s, BMS_CHR_BANK, false, 0, &value, &len));
	zassert_true(len != first_len || memcmp(value, first, len) != 0,
		     "a read at offset 0 must build the page afresh");
}

/* BLE-2, BLE-4: a refused write is ATT error 0x80 + status (not authenticated, truncated,
 * out of range, unknown characteristic) and changes nothing: the settings read back are the
 * ones before.
 */
ZTEST(gatt, test_ble_4_refused_write_is_att_error_and_changes_nothing)
{
	/* Defaults with charged_cell_mv 3000 (below 3350): InvalidValue for field 0. */
	static const uint8_t too_low[] = {0x01, 0xB8, 0x17, 0x28, 0x03, 0x14, 0x0A, 0x9C, 0x18};
	static const uint8_t version_only[] = {0x01};
	uint8_t before[BMS_GATT_RESPONSE_MAX];
	uint8_t request[BMS_GATT_RESPONSE_MAX];
	struct gatt_session s;
	const uint8_t *value;
	size_t before_len;
	size_t len;

	gatt_session_reset(&s);
	zassert_ok(gatt_read(&s, BMS_CHR_SETTINGS, false, 0, &value, &before_len));
	zassert_equal(value[BMS_RESPONSE_STATUS_OFFSET], BMS_STATUS_OK);
	memcpy(before, value, before_len);

	/* The settings in force, written back: [version, body]. */
	request[0] = before[0];
	memcpy(&request[1], &before[2], before_len - 2);
	zassert_equal(write_req(&s, BMS_CHR_SETTINGS, false, request, before_len - 1),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_NOT_AUTHENTICATED));
	zassert_equal(write_req(&s, BMS_CHR_SETTINGS, true, version_only, sizeof(version_only)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_TRUNCATED));
	zassert_equal(write_req(&s, BMS_CHR_SETTINGS, true, too_low, sizeof(too_low)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_INVALID_VALUE));
	zassert_equal(resp[2], 0, "the refusal names field 0 (charged_cell_mv)");
	zassert_equal(write_req(&s, 42, true, version_only, sizeof(version_only)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_UNKNOWN_CHARACTERISTIC));

	zassert_ok(gatt_read(&s, BMS_CHR_SETTINGS, false, 0, &value, &len));
	zassert_equal(len, before_len);
	zassert_mem_equal(value, before, before_len, "a refused write changed the settings");

	zassert_equal(write_req(&s, BMS_CHR_SETTINGS, true, request, before_len - 1), 0,
		      "the same settings on an authenticated link are accepted");
}

/* BLE-2: the BLE side gets the unit's own passkey when the core opens, and the new one after
 * an authenticated ChangePasskey, with a bond action removing every other bond (the asking
 * phone's stays, ble.c keeps it); a refused change keeps the passkey and removes nothing.
 */
ZTEST(gatt, test_ble_2_passkey_follows_change_passkey_and_other_bonds_go)
{
	/* ChangePasskey (command 4) with 123456 and with 1000000 (out of range). */
	static const uint8_t change_ok[] = {0x01, 0x04, 0xC0, 0xC4, 0x07};
	static const uint8_t change_too_big[] = {0x01, 0x04, 0xC0, 0x84, 0x3D};
	const struct bms_bond bonds[] = {phone, tablet};
	struct gatt_session s;
	struct support_ble seen = support_ble();
	uint32_t factory = seen.passkey;
	uint32_t actions;

	zassert_ok(control_post_bonds(bonds, ARRAY_SIZE(bonds)));
	k_sleep(K_MSEC(200));
	actions = support_ble().bond_actions;
	zassert_true(seen.passkey_updates >= 1, "no passkey given to the BLE side at start");
	/* BLE-2 rev 2: a per-unit passkey from the random source, never 000000. */
	zassert_true(factory != 0 && factory <= BMS_PASSKEY_MAX, "factory passkey %u", factory);

	gatt_session_reset(&s);
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, false, change_ok, sizeof(change_ok)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_NOT_AUTHENTICATED));
	zassert_equal(support_ble().passkey, factory, "unauthenticated change applied");

	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, change_too_big,
			    sizeof(change_too_big)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_INVALID_VALUE));
	zassert_equal(support_ble().passkey, factory, "out-of-range passkey applied");
	zassert_equal(support_ble().bond_actions, actions, "a refused change removed bonds");

	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, change_ok, sizeof(change_ok)), 0);
	zassert_equal(support_ble().passkey, 123456, "new passkey not given to the BLE side");
	zassert_equal(bond_action_after(actions), BMS_BOND_ACTION_KIND_REMOVE_OTHERS,
		      "ChangePasskey must remove every other bond");
}

/* BLE-2: after power-up nothing pairs until the BLE stack's bonds are known; with none, the
 * power-up window is open; with a bond it is not. Named to run before the other BLE-2 tests
 * (Ztest runs a suite's tests by name), which report bonds and press the button.
 */
ZTEST(gatt, test_ble_2_after_power_up_pairing_waits_for_the_bonds)
{
	k_sleep(K_MSEC(500));
	zassert_false(support_ble().pairing_allowed, "pairing allowed before the bonds are known");

	zassert_ok(control_post_bonds(NULL, 0));
	zassert_true(pairing_allowed_becomes(true, 500), "power-up window without bonds");

	zassert_ok(control_post_bonds(&phone, 1));
	zassert_true(pairing_allowed_becomes(false, 500), "power-up window open with a bond");
}

/* BLE-2: with a bond, pairing opens only after a press of the button. A failed attempt closes
 * pairing for the back-off (5 s, then 10 s: it doubles), also inside the window; a successful
 * one closes the window. Each pairing_allowed handed to ble.c says how many results it has
 * seen, so ble.c refuses while a result is on its way.
 */
ZTEST(gatt, test_ble_2_pairing_only_in_the_window_and_backs_off_after_failures)
{
	uint32_t handled;

	/* A success closes any window an earlier test opened and clears the back-off. */
	zassert_ok(control_post_bonds(&phone, 1));
	zassert_ok(control_post_pairing_result(true));
	zassert_true(pairing_allowed_becomes(false, 500), "open after a pairing");
	k_sleep(K_SECONDS(1));
	zassert_false(support_ble().pairing_allowed, "pairing opened without the button");

	press_button(200);
	zassert_true(pairing_allowed_becomes(true, 500), "a press must open the window");

	handled = support_ble().pairing_results_handled;
	zassert_ok(control_post_pairing_result(false));
	zassert_true(pairing_allowed_becomes(false, 500), "a failure must start the back-off");
	zassert_equal(support_ble().pairing_results_handled, handled + 1,
		      "pairing_allowed must say it reflects the result");
	k_sleep(K_MSEC(4500));
	zassert_false(support_ble().pairing_allowed, "back-off shorter than 5 s");
	zassert_true(pairing_allowed_becomes(true, 1000), "back-off longer than 5 s");

	zassert_ok(control_post_pairing_result(false));
	zassert_true(pairing_allowed_becomes(false, 500), "a second failure must back off");
	k_sleep(K_MSEC(9500));
	zassert_false(support_ble().pairing_allowed, "the second back-off must be 10 s");
	zassert_true(pairing_allowed_becomes(true, 1000), "second back-off longer than 10 s");

	zassert_ok(control_post_pairing_result(true));
	zassert_true(pairing_allowed_becomes(false, 500), "a success must close the window");
	k_sleep(K_SECONDS(1));
	zassert_false(support_ble().pairing_allowed, "window open after a pairing");
}

/* BLE-2: ListBonds answers the bonds the stack reported; RemoveBond hands the removal of that
 * bond to the BLE side and refuses an unknown one (NotAvailable); both need an authenticated
 * link.
 */
ZTEST(gatt, test_ble_2_bonds_listed_and_removed_over_the_control_point)
{
	static const uint8_t list[] = {0x01, 0x06};
	static const uint8_t remove_tablet[] = {0x01, 0x07, 0x01, 0x01, 0x02,
						0x03, 0x04, 0x05, 0xD7};
	static const uint8_t remove_unknown[] = {0x01, 0x07, 0x00, 0x01, 0x02,
						 0x03, 0x04, 0x05, 0x06};
	/* [version, OK, read_protection off, 2 bonds, phone, tablet]. */
	static const uint8_t listed[] = {0x01, 0x00, 0x00, 0x02, 0x01, 0x11, 0x22, 0x33, 0x44,
					 0x55, 0xC6, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0xD7};
	const struct bms_bond bonds[] = {phone, tablet};
	struct support_ble seen;
	struct gatt_session s;
	uint32_t actions;

	gatt_session_reset(&s);
	zassert_ok(control_post_bonds(bonds, ARRAY_SIZE(bonds)));
	k_sleep(K_MSEC(200));

	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, false, list, sizeof(list)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_NOT_AUTHENTICATED));
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, list, sizeof(list)), 0);
	zassert_mem_equal(resp, listed, sizeof(listed), "BondList %02x %02x %02x %02x", resp[0],
			  resp[1], resp[2], resp[3]);

	actions = support_ble().bond_actions;
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, false, remove_tablet,
			    sizeof(remove_tablet)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_NOT_AUTHENTICATED));
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, remove_unknown,
			    sizeof(remove_unknown)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_NOT_AVAILABLE));
	k_sleep(K_MSEC(200));
	zassert_equal(support_ble().bond_actions, actions, "a refused removal removed a bond");

	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, remove_tablet,
			    sizeof(remove_tablet)), 0);
	zassert_equal(bond_action_after(actions), BMS_BOND_ACTION_KIND_REMOVE);
	seen = support_ble();
	zassert_mem_equal(&seen.bond_action.bond, &tablet, sizeof(tablet),
			  "RemoveBond must name the bond to remove");
}

/* BLE-2: read protection turned on over the control point reaches the BLE side (ble.c then
 * puts CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S on links that never authenticate, docs/security.md
 * M6), and off again.
 */
ZTEST(gatt, test_ble_2_read_protection_reaches_the_ble_side)
{
	static const uint8_t on[] = {0x01, 0x0A, 0x01};
	static const uint8_t off[] = {0x01, 0x0A, 0x00};
	struct gatt_session s;

	gatt_session_reset(&s);
	zassert_false(read_protection(), "read protection on by default");
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, on, sizeof(on)), 0);
	zassert_true(ble_flag_becomes(read_protection, true, 1000),
		     "read protection did not reach ble.c");

	/* Open again for the other tests' reads. */
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, off, sizeof(off)), 0);
	zassert_true(ble_flag_becomes(read_protection, false, 1000),
		     "read protection stayed on at ble.c");
}

static uint32_t status_posts(void)
{
	return support_ble().status_posts;
}

/* Sends reports of both batteries with @p current_ma each, for up to 10 s (returning data is
 * judged first), until a status page has been posted for notification after @p before posts;
 * returns whether one was.
 */
static bool status_posted_at_current(int32_t current_ma, uint32_t before)
{
	for (int i = 0; i < 50; i++) {
		uint32_t serials[] = {SERIAL_A, SERIAL_B};

		ARRAY_FOR_EACH(serials, j) {
			struct test_report r = support_report(3300);
			uint8_t frame[128];
			size_t len;

			r.serial = serials[j];
			r.current_ma = current_ma;
			len = support_encode_frame(&r, frame, sizeof(frame));
			support_bus_rx(frame, len);
		}
		k_sleep(K_MSEC(200));
		if (status_posts() > before) {
			return true;
		}
	}
	return false;
}

/* BLE-1, BLE-2: a change of the status page (here the bank current the batteries report) is
 * posted for notification to a subscribed connection, with read protection off and on: the
 * control thread builds the page as for an authenticated link (ble.c then notifies only the
 * links that may read it); asked as an unauthenticated link, the core answered
 * NotAuthenticated with protection on and nobody was notified.
 */
ZTEST(gatt, test_ble_2_status_notified_with_read_protection_on)
{
	static const uint8_t on[] = {0x01, 0x0A, 0x01};
	static const uint8_t off[] = {0x01, 0x0A, 0x00};
	/* Earlier tests leave batteries lost; with them the readout values are "not available"
	 * and do not change.
	 */
	static const uint8_t forget_lost[] = {0x01, 0x08};
	struct gatt_session s;

	gatt_session_reset(&s);
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, forget_lost, sizeof(forget_lost)),
		      0);
	support_status_subscribed(true);

	zassert_true(status_posted_at_current(-5000, status_posts()),
		     "no status posted with read protection off");
	zassert_true(status_posted_at_current(0, status_posts()),
		     "no status posted with read protection off");

	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, on, sizeof(on)), 0);
	zassert_true(ble_flag_becomes(read_protection, true, 1000),
		     "read protection did not reach ble.c");
	zassert_true(status_posted_at_current(-5000, status_posts()),
		     "no status posted with read protection on");
	zassert_true(status_posted_at_current(0, status_posts()),
		     "no status posted with read protection on");

	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, off, sizeof(off)), 0);
	zassert_true(ble_flag_becomes(read_protection, false, 1000),
		     "read protection stayed on at ble.c");
	support_status_subscribed(false);
}

/* BLE-2, ble.c's half of the status rule (df61d55): the control thread builds the status page
 * as for an authenticated link, so with read protection on ble.c's notify_status() must leave
 * out every subscribed link that is not authenticated, a guest (the Status CCC is writable on
 * any link); it asks gatt_status_notified() with the read protection the control thread gave
 * it and whether the link is authenticated (security L3 or more). Read protection is switched
 * on over the control point as the owner does, and the rule asked with what reached ble.c: a
 * guest is notified with it off, never with it on; the owner always.
 */
ZTEST(gatt, test_ble_2_a_guest_is_not_notified_with_read_protection_on)
{
	static const uint8_t on[] = {0x01, 0x0A, 0x01};
	static const uint8_t off[] = {0x01, 0x0A, 0x00};
	struct gatt_session s;
	bool reached;
	bool guest;
	bool owner;

	gatt_session_reset(&s);
	zassert_false(read_protection(), "read protection on before the test");
	zassert_true(gatt_status_notified(read_protection(), false),
		     "a guest is not notified with read protection off");
	zassert_true(gatt_status_notified(read_protection(), true),
		     "the owner is not notified with read protection off");

	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, on, sizeof(on)), 0);
	reached = ble_flag_becomes(read_protection, true, 1000);
	guest = gatt_status_notified(read_protection(), false);
	owner = gatt_status_notified(read_protection(), true);

	/* Open again for the other tests' reads, before any assertion can end the test. */
	zassert_equal(write_req(&s, BMS_CHR_CONTROL_POINT, true, off, sizeof(off)), 0);
	zassert_true(ble_flag_becomes(read_protection, false, 1000),
		     "read protection stayed on at ble.c");

	zassert_true(reached, "read protection did not reach ble.c");
	zassert_false(guest, "a guest is notified with read protection on");
	zassert_true(owner, "the owner is not notified with read protection on");
}

/* BLE-2: the button held 10 s resets pairing: a new passkey goes to the BLE side and every
 * bond is removed (a press that short of 10 s does not).
 */
ZTEST(gatt, test_ble_2_button_held_10_s_resets_pairing)
{
	uint32_t before;
	uint32_t actions;

	zassert_ok(control_post_bonds(&phone, 1));
	k_sleep(K_MSEC(200));
	before = support_ble().passkey;
	actions = support_ble().bond_actions;

	press_button(9000);
	k_sleep(K_MSEC(500));
	zassert_equal(support_ble().bond_actions, actions, "a 9 s press reset pairing");
	zassert_equal(support_ble().passkey, before, "a 9 s press changed the passkey");

	press_button(10500);
	zassert_equal(bond_action_after(actions), BMS_BOND_ACTION_KIND_REMOVE_ALL,
		      "the reset must remove every bond");
	zassert_true(support_ble().passkey != before && support_ble().passkey != 0 &&
			     support_ble().passkey <= BMS_PASSKEY_MAX,
		     "new passkey %u (was %u)", support_ble().passkey, before);
}

/* BLE-1: the BLE side gets the device name when the core opens ("OpenBMS" at first start) and
 * the new one after an authenticated write to the Device name characteristic; a refused
 * rename keeps it.
 */
ZTEST(gatt, test_ble_1_device_name_follows_rename)
{
	static const uint8_t rename[] = {0x01, 0x06, 'B', 'o', 'a', 't', ' ', '2'};
	static const uint8_t too_long[] = {0x01, 19, 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a',
					   'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a'};
	struct gatt_session s;
	struct support_ble seen = support_ble();
	uint32_t updates;

	zassert_true(seen.name_updates >= 1, "no device name given to the BLE side at start");
	zassert_str_equal(seen.name, "OpenBMS");
	updates = seen.name_updates;

	gatt_session_reset(&s);
	zassert_equal(write_req(&s, BMS_CHR_DEVICE_NAME, false, rename, sizeof(rename)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_NOT_AUTHENTICATED));
	zassert_equal(write_req(&s, BMS_CHR_DEVICE_NAME, true, too_long, sizeof(too_long)),
		      APP_ATT_ERR_REFUSED(BMS_STATUS_INVALID_VALUE));
	zassert_equal(support_ble().name_updates, updates, "a refused rename was applied");
	zassert_str_equal(support_ble().name, "OpenBMS");

	zassert_equal(write_req(&s, BMS_CHR_DEVICE_NAME, true, rename, sizeof(rename)), 0);
	zassert_str_equal(support_ble().name, "Boat 2", "new name not given to the BLE side");
}

/* BLE-3: the first Instant Readout advertisement is posted after the first step, with the
 * company id 0x02E1 and the Product Advertisement record, and only once the nonce
 * reservation it uses is in storage.
 */
ZTEST(gatt, test_ble_3_first_advertisement_after_nonce_stored)
{
	struct support_ble seen = support_ble();

	for (int i = 0; i < 20 && seen.adv_posts == 0; i++) {
		k_sleep(K_MSEC(100));
		seen = support_ble();
	}

	zassert_true(seen.adv_posts >= 1, "no advertisement posted");
	zassert_equal(seen.adv_len, BMS_ADVERTISEMENT_LEN);
	zassert_equal(seen.adv[0], 0xE1, "company id low byte");
	zassert_equal(seen.adv[1], 0x02, "company id high byte");
	zassert_equal(seen.adv[2], 0x10, "Product Advertisement record");
	zassert_true(seen.nonce_stored_at_first_adv, "advertised before the nonce was stored");
}

ZTEST_SUITE(gatt, NULL, gatt_setup, NULL, NULL, NULL);
