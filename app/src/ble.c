/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Bluetooth LE: the OpenBMS GATT service (docs/protocol.md), the Instant Readout advertisement
 * (BLE-3) and passkey pairing (BLE-2). GATT requests go through gatt.c to the control thread,
 * which owns the library; this file only maps ATT to them and back. Patterns of
 * samples/bluetooth/peripheral_hr (service, callbacks), subsys/bluetooth/services/bas (notify)
 * and samples/subsys/mgmt/mcumgr/smp_svr (advertising restarted from .recycled).
 *
 * Permissions (BLE-2): monitoring pages and the battery selector are open; settings writes and
 * control-point commands need an encrypted link authenticated by the passkey (security level
 * 3, BT_GATT_PERM_*_AUTHEN). The stack refuses other requests before they get here; the core
 * is told whether the link is authenticated and checks again.
 *
 * Pairing (BLE-2): the core decides when a new pairing may start (the window after a press of
 * the button, the back-off after failures); the pairing-accept callback answers with its last
 * word, and refuses while a pairing result is still on its way to the core. Only a pairing this
 * file accepted is reported back (complete, failed, or the link dropped during it); a refused
 * request never started, so it taught the peer nothing about the passkey. The bonds are
 * reported to the core at start and after every change; the core's bond actions (reset,
 * RemoveBond, ChangePasskey's "remove the others") are carried out here with bt_unpair.
 *
 * Connections (M6 of docs/security.md): two, so that a central that never authenticates cannot
 * lock the owner out. When a new link takes the last free connection, the oldest other link
 * that is not authenticated is disconnected, so a connection stays free unless the other links
 * are authenticated (the owner is in); authenticated links are never cut for this. A link from
 * a bonded peer is asked to encrypt at once (a Security Request), so the owner's phone is
 * authenticated before another central can take its place. With read protection on, a link
 * that does not authenticate within CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S is disconnected: it
 * could only hold a connection.
 *
 * Bluetooth work runs on the system work queue: the control thread leaves the newest
 * advertisement and status page in a mailbox and submits a k_work item (submitting a pending
 * item again is a no-op, so only the newest data goes out); advertising restarts after a
 * connection from .recycled the same way. Control-point responses are queued whole, one per
 * write, and indicated one at a time: the confirmation submits the next.
 */

#include <string.h>

#include <zephyr/bluetooth/addr.h>
#include <zephyr/bluetooth/bluetooth.h>
#include <zephyr/bluetooth/conn.h>
#include <zephyr/bluetooth/gap.h>
#include <zephyr/bluetooth/gatt.h>
#include <zephyr/bluetooth/uuid.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/mgmt/mcumgr/transport/smp_bt.h>
#include <zephyr/settings/settings.h>
#include <zephyr/sys/atomic.h>
#include <zephyr/sys/util.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_ble, CONFIG_BMS_LOG_LEVEL);

/* fde4NNNN-2435-4d33-8157-077d40b73501: NNNN = 0001 for the service, characteristic + 1. */
#define BMS_UUID(nnnn) BT_UUID_128_ENCODE(0xfde40000 | (nnnn), 0x2435, 0x4d33, 0x8157, 0x077d40b73501)
#define BMS_SVC_UUID       BT_UUID_DECLARE_128(BMS_UUID(0x0001))
#define BMS_CHR_UUID(chr)  BT_UUID_DECLARE_128(BMS_UUID((chr) + 1))

#define CHR(n) ((void *)(uintptr_t)(n))

/* A notification or indication carries at most ATT_MTU - 3 bytes (opcode and handle). */
#define ATT_NOTIFY_OVERHEAD 3

/* Legacy advertising: Flags (3 bytes) and the Instant Readout manufacturer data must fit. */
BUILD_ASSERT(3 + 2 + BMS_ADVERTISEMENT_LEN <= BT_GAP_ADV_MAX_ADV_DATA_LEN,
	     "Instant Readout data does not fit a legacy advertisement");
/* The scan response: the device name beside the SMP service UUID; a longer name is advertised
 * shortened (the GAP Device Name has it whole).
 */
#define SD_UUID_LEN  (IS_ENABLED(CONFIG_MCUMGR_TRANSPORT_BT) ? 2 + 16 : 0)
#define SD_NAME_ROOM (BT_GAP_ADV_MAX_ADV_DATA_LEN - SD_UUID_LEN - 2)
BUILD_ASSERT(SD_NAME_ROOM >= sizeof(CONFIG_BT_DEVICE_NAME) - 1,
	     "the factory device name and SMP UUID do not fit the scan response");
BUILD_ASSERT(CONFIG_BT_DEVICE_NAME_MAX >= BMS_DEVICE_NAME_MAX, "device names would be cut");
BUILD_ASSERT(CONFIG_BT_MAX_PAIRED <= BMS_MAX_BONDS, "the core takes at most BMS_MAX_BONDS bonds");
/* M6: one connection for a central that does not authenticate, one kept free for the owner. */
BUILD_ASSERT(CONFIG_BT_MAX_CONN >= 2, "an unauthenticated central would lock the owner out");

/* A control-point response waiting to be indicated to the connection that wrote the command. */
struct indication {
	struct bt_conn *conn; /* referenced */
	uint16_t len;
	uint8_t data[BMS_GATT_RESPONSE_MAX];
};

K_MSGQ_DEFINE(indication_q, sizeof(struct indication), 2, 4);

static atomic_t ready;
static atomic_t connections;
static atomic_t status_notify;
static atomic_t passkey;
static atomic_t passkey_known;
/* BLE-2: the core's pairing_allowed, and pairing results posted to it but not yet reflected. */
static atomic_t pairing_allowed;
static atomic_t pairing_results_pending;
/* Per connection (bt_conn_index()): a pairing this file accepted is running. */
static ATOMIC_DEFINE(pairing_accepted, CONFIG_BT_MAX_CONN);

/* M6, per connection (bt_conn_index()): the order links came in (the oldest unauthenticated
 * one goes first) and when each came (k_uptime_get_32(), for the time limit).
 */
static atomic_t link_order[CONFIG_BT_MAX_CONN];
static atomic_t link_since_ms[CONFIG_BT_MAX_CONN];
static atomic_t links_seen;
/* BLE-2: the core's read protection, and since when it is on (k_uptime_get_32()). */
static atomic_t read_protection;
static atomic_t read_protection_since_ms;
/* The time limit of each connection; initialised in ble_init(), before any link. */
static struct k_work_delayable link_limit[CONFIG_BT_MAX_CONN];
static atomic_t link_limits_ready;

static K_MUTEX_DEFINE(mailbox_lock);
static struct {
	bool adv_posted;
	uint8_t adv[BMS_ADVERTISEMENT_LEN];
	uint8_t adv_len;
	bool adv_low_power;
	uint8_t status[BMS_GATT_RESPONSE_MAX];
	uint16_t status_len;
	char name[BMS_DEVICE_NAME_MAX + 1];
	/* The peer of the control-point write being handled (ChangePasskey keeps its bond). */
	bt_addr_le_t control_writer;
	bool control_writer_known;
} mailbox;

/* Owned by the work items (all on the system work queue, never concurrently). */
static uint8_t mfg_data[BMS_ADVERTISEMENT_LEN];
static bool advertising_low_power;
/* Advertising was started once (after the control thread's first post). */
static bool advertising_started;
/* A bond whose removal waits until its own link drops (RemoveBond of the asking phone). */
static bt_addr_le_t unpair_at_disconnect;
static bool unpair_pending;
static uint8_t status_data[BMS_GATT_RESPONSE_MAX];

static struct bt_data ad[] = {
	BT_DATA_BYTES(BT_DATA_FLAGS, (BT_LE_AD_GENERAL | BT_LE_AD_NO_BREDR)),
	BT_DATA(BT_DATA_MANUFACTURER_DATA, mfg_data, 0),
};

static char sd_name[BMS_DEVICE_NAME_MAX + 1] = CONFIG_BT_DEVICE_NAME;

static struct bt_data sd[] = {
	BT_DATA(BT_DATA_NAME_COMPLETE, sd_name, sizeof(CONFIG_BT_DEVICE_NAME) - 1),
#if defined(CONFIG_MCUMGR_TRANSPORT_BT)
	BT_DATA_BYTES(BT_DATA_UUID128_ALL, SMP_BT_SVC_UUID_VAL),
#endif
};

/* One per connection (bt_conn_index()); touched only from the Bluetooth host's callbacks,
 * which handle one ATT request of a connection at a time.
 */
static struct gatt_session sessions[CONFIG_BT_MAX_CONN];
static uint8_t write_resp[BMS_GATT_RESPONSE_MAX];

static void post_control_response(struct bt_conn *conn, const uint8_t *resp, size_t len);

static bool authenticated(struct bt_conn *conn)
{
	return conn != NULL && bt_conn_get_security(conn) >= BT_SECURITY_L3;
}

static ssize_t read_chr(struct bt_conn *conn, const struct bt_gatt_attr *attr, void *buf,
			uint16_t len, uint16_t offset)
{
	uint8_t chr = (uint8_t)(uintptr_t)attr->user_data;
	const uint8_t *value;
	size_t value_len;
	int err;

	err = gatt_read(&sessions[bt_conn_index(conn)], chr, authenticated(conn), offset, &value,
			&value_len);
	if (err) {
		LOG_ERR("Read of characteristic %u failed (err %d)", chr, err);
		return BT_GATT_ERR(BT_ATT_ERR_UNLIKELY);
	}

	return bt_gatt_attr_read(conn, attr, buf, len, offset, value, value_len);
}

static ssize_t write_chr(struct bt_conn *conn, const struct bt_gatt_attr *attr, const void *buf,
			 uint16_t len, uint16_t offset, uint8_t flags)
{
	uint8_t chr = (uint8_t)(uintptr_t)attr->user_data;
	size_t resp_len = 0;
	int err;

	ARG_UNUSED(flags);

	/* Every request is one whole ATT write: the protocol has no long writes. */
	if (offset != 0) {
		return BT_GATT_ERR(BT_ATT_ERR_INVALID_OFFSET);
	}

	if (chr == BMS_CHR_CONTROL_POINT) {
		k_mutex_lock(&mailbox_lock, K_FOREVER);
		bt_addr_le_copy(&mailbox.control_writer, bt_conn_get_dst(conn));
		mailbox.control_writer_known = true;
		k_mutex_unlock(&mailbox_lock);
	}

	err = gatt_write(&sessions[bt_conn_index(conn)], chr, authenticated(conn), buf, len,
			 write_resp, sizeof(write_resp), &resp_len);

	if (chr == BMS_CHR_CONTROL_POINT) {
		k_mutex_lock(&mailbox_lock, K_FOREVER);
		mailbox.control_writer_known = false;
		k_mutex_unlock(&mailbox_lock);
	}
	if (err < 0) {
		LOG_ERR("Write to characteristic %u failed (err %d)", chr, err);
		return BT_GATT_ERR(BT_ATT_ERR_UNLIKELY);
	}

	/* The control point answers by indication, refusals included: an InvalidValue
	 * response carries the allowed range (docs/protocol.md).
	 */
	if (chr == BMS_CHR_CONTROL_POINT) {
		post_control_response(conn, write_resp, resp_len);
	}

	/* BLE-4: a refused request is ATT error 0x80 + status and changed nothing. */
	if (err > 0) {
		return BT_GATT_ERR(err);
	}

	return len;
}

static void status_ccc_changed(const struct bt_gatt_attr *attr, uint16_t value)
{
	ARG_UNUSED(attr);

	atomic_set(&status_notify, value == BT_GATT_CCC_NOTIFY);
}

/* Attribute indices used below: [1] status declaration, [18] control point value. Each
 * characteristic carries a User Description, so generic BLE tools show its name.
 */
BT_GATT_SERVICE_DEFINE(bms_svc,
	BT_GATT_PRIMARY_SERVICE(BMS_SVC_UUID),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_STATUS), BT_GATT_CHRC_READ | BT_GATT_CHRC_NOTIFY,
			       BT_GATT_PERM_READ, read_chr, NULL, CHR(BMS_CHR_STATUS)),
	BT_GATT_CCC(status_ccc_changed, BT_GATT_PERM_READ | BT_GATT_PERM_WRITE),
	BT_GATT_CUD("Status", BT_GATT_PERM_READ),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_BANK), BT_GATT_CHRC_READ,
			       BT_GATT_PERM_READ, read_chr, NULL, CHR(BMS_CHR_BANK)),
	BT_GATT_CUD("Bank", BT_GATT_PERM_READ),
	/* Selecting which battery to read is part of reading, so it is open (BLE-2). */
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_BATTERY), BT_GATT_CHRC_READ | BT_GATT_CHRC_WRITE,
			       BT_GATT_PERM_READ | BT_GATT_PERM_WRITE, read_chr, write_chr,
			       CHR(BMS_CHR_BATTERY)),
	BT_GATT_CUD("Battery (write the number, then read)", BT_GATT_PERM_READ),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_HISTORY), BT_GATT_CHRC_READ,
			       BT_GATT_PERM_READ, read_chr, NULL, CHR(BMS_CHR_HISTORY)),
	BT_GATT_CUD("History", BT_GATT_PERM_READ),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_SETTINGS),
			       BT_GATT_CHRC_READ | BT_GATT_CHRC_WRITE,
			       BT_GATT_PERM_READ | BT_GATT_PERM_WRITE_AUTHEN, read_chr, write_chr,
			       CHR(BMS_CHR_SETTINGS)),
	BT_GATT_CUD("Settings", BT_GATT_PERM_READ),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_CONTROL_POINT),
			       BT_GATT_CHRC_WRITE | BT_GATT_CHRC_INDICATE,
			       BT_GATT_PERM_WRITE_AUTHEN, NULL, write_chr,
			       CHR(BMS_CHR_CONTROL_POINT)),
	BT_GATT_CCC(NULL, BT_GATT_PERM_READ | BT_GATT_PERM_WRITE_AUTHEN),
	BT_GATT_CUD("Control point", BT_GATT_PERM_READ),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_DEVICE_NAME),
			       BT_GATT_CHRC_READ | BT_GATT_CHRC_WRITE,
			       BT_GATT_PERM_READ | BT_GATT_PERM_WRITE_AUTHEN, read_chr, write_chr,
			       CHR(BMS_CHR_DEVICE_NAME)),
	BT_GATT_CUD("Device name", BT_GATT_PERM_READ),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(BMS_CHR_SOC), BT_GATT_CHRC_READ, BT_GATT_PERM_READ,
			       read_chr, NULL, CHR(BMS_CHR_SOC)),
	BT_GATT_CUD("State of charge (how known, uncertainty)", BT_GATT_PERM_READ),
);

#define STATUS_ATTR (&bms_svc.attrs[1])
#define CONTROL_POINT_VALUE_ATTR (&bms_svc.attrs[18])

/* Whether @p len bytes fit one notification or indication on @p conn; a page that does not is
 * skipped, never cut: the client reads the characteristic instead (docs/protocol.md).
 */
static bool fits_mtu(struct bt_conn *conn, size_t len)
{
	uint16_t mtu = bt_gatt_get_mtu(conn);

	return mtu > ATT_NOTIFY_OVERHEAD && len <= (size_t)(mtu - ATT_NOTIFY_OVERHEAD);
}

/* Two advertising sets, both with legacy PDUs so that every scanner hears them:
 * - the Instant Readout (BLE-3): flags and the manufacturer data only (no name, no service,
 *   no scan response), not connectable, from the identity address whoever is connected
 *   (readout decoders know a device by its address); it matches none of the web app's
 *   filters, so no chooser offers it for connecting. None while the core has no packet
 *   (BLE-3: not available rather than stale or under a placeholder key);
 * - the connectable one (flags and the OpenBMS service, which finds a renamed unit; the name
 *   in the scan response) while a connection is free, always from a resolvable private
 *   address (LE privacy, CONFIG_BT_PRIVACY), bonded or not: it changes every
 *   CONFIG_BT_RPA_TIMEOUT seconds, and only bonded phones, which got the unit's identity key
 *   when pairing, know it is this unit (an unbonded phone finds it by service or name).
 * The controller stops the connectable set when a central connects; .recycled starts it again.
 */
#define ADV_OPT_READOUT BT_LE_ADV_OPT_USE_IDENTITY

static struct bt_le_ext_adv *readout_set;
static struct bt_le_ext_adv *connectable_set;

/* Flags (3 bytes) and the 128-bit service UUID (18 bytes) fit the 31 bytes of legacy data. */
static const struct bt_data connectable_ad[] = {
	BT_DATA_BYTES(BT_DATA_FLAGS, (BT_LE_AD_GENERAL | BT_LE_AD_NO_BREDR)),
	BT_DATA_BYTES(BT_DATA_UUID128_ALL, BMS_UUID(0x0001)),
};

/* Advertising parameters with @p options at the interval of the power mode (PROT-12). */
static struct bt_le_adv_param adv_param(uint32_t options)
{
	return (struct bt_le_adv_param){
		.id = BT_ID_DEFAULT,
		.options = options,
		.interval_min = advertising_low_power ? BT_GAP_ADV_SLOW_INT_MIN
						      : BT_GAP_ADV_FAST_INT_MIN_2,
		.interval_max = advertising_low_power ? BT_GAP_ADV_SLOW_INT_MAX
						      : BT_GAP_ADV_FAST_INT_MAX_2,
	};
}

/* (Re)starts @p set with @p options, the current interval, @p data and @p scan (a scan
 * response of @p scan_len elements).
 */
static void set_start(struct bt_le_ext_adv *set, uint32_t options, const struct bt_data *data,
		      size_t data_len, const struct bt_data *scan, size_t scan_len,
		      const char *what)
{
	struct bt_le_adv_param param = adv_param(options);
	int err;

	(void)bt_le_ext_adv_stop(set);
	err = bt_le_ext_adv_update_param(set, &param);
	if (err == 0) {
		err = bt_le_ext_adv_set_data(set, data, data_len, scan, scan_len);
	}
	if (err == 0) {
		err = bt_le_ext_adv_start(set, BT_LE_EXT_ADV_START_DEFAULT);
	}
	if (err) {
		LOG_ERR("Advertising (%s) failed to start (err %d)", what, err);
	}
}

static void advertise_connectable(void)
{
	if (atomic_get(&connections) < CONFIG_BT_MAX_CONN) {
		set_start(connectable_set, BT_LE_ADV_OPT_CONN, connectable_ad,
			  ARRAY_SIZE(connectable_ad), sd, ARRAY_SIZE(sd), "connectable");
	}
}

static void advertise(void)
{
	advertising_started = true;
	if (ad[1].data_len > 0) {
		set_start(readout_set, ADV_OPT_READOUT, ad, ARRAY_SIZE(ad), NULL, 0, "readout");
	} else {
		(void)bt_le_ext_adv_stop(readout_set);
	}
	advertise_connectable();
}

/* The new name in the connectable set's scan response (the readout carries none). */
static void advertising_data_update(void)
{
	int err = bt_le_ext_adv_set_data(connectable_set, connectable_ad,
					 ARRAY_SIZE(connectable_ad), sd, ARRAY_SIZE(sd));

	if (err) {
		LOG_ERR("Advertising data not updated (err %d)", err);
	}
}

static void advertisement_update(struct k_work *work)
{
	bool had_readout = ad[1].data_len > 0;
	bool posted;
	bool low_power;

	ARG_UNUSED(work);

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	posted = mailbox.adv_posted;
	memcpy(mfg_data, mailbox.adv, mailbox.adv_len);
	ad[1].data_len = mailbox.adv_len;
	low_power = mailbox.adv_low_power;
	k_mutex_unlock(&mailbox_lock);

	/* Nothing is advertised before the control thread's first post. */
	if (!posted || readout_set == NULL) {
		return;
	}
	if (!advertising_started || low_power != advertising_low_power ||
	    had_readout != (ad[1].data_len > 0)) {
		advertising_low_power = low_power;
		advertise();
		return;
	}
	if (ad[1].data_len > 0) {
		int err = bt_le_ext_adv_set_data(readout_set, ad, ARRAY_SIZE(ad), NULL, 0);

		if (err) {
			LOG_ERR("Readout data not updated (err %d)", err);
		}
	}
}

static K_WORK_DEFINE(advertisement_work, advertisement_update);

static void advertising_restart(struct k_work *work)
{
	ARG_UNUSED(work);

	if (advertising_started) {
		advertise_connectable();
	}
}

static K_WORK_DEFINE(restart_work, advertising_restart);

/* The owner's device name to the host (GAP Device Name). bt_set_name() stores "bt/name" at
 * once whenever the name differs (CONFIG_BT_SETTINGS), so a phone alternating two names would
 * write the flash at every rename; the core's own name record is written at most once per
 * BMS_USER_WRITE_INTERVAL_MS and is what every start applies. So the host takes a new name at
 * once when it took none within that interval, else when the interval is over: the last name
 * of a burst, one store per interval.
 */
static int64_t name_to_host_ms;
static bool name_to_host_once;

static void name_to_host(struct k_work *work)
{
	char name[sizeof(sd_name)];
	int err;

	ARG_UNUSED(work);

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	memcpy(name, mailbox.name, sizeof(name));
	k_mutex_unlock(&mailbox_lock);

	if (name[0] == '\0' || strcmp(name, bt_get_name()) == 0) {
		return;
	}
	name_to_host_ms = k_uptime_get();
	name_to_host_once = true;
	err = bt_set_name(name);
	if (err) {
		LOG_ERR("Device name not set (err %d)", err);
		return;
	}
	LOG_INF("Device name to the host: %s", name);
}

static K_WORK_DELAYABLE_DEFINE(name_to_host_work, name_to_host);

/* The owner's device name into the scan response at once (shortened where it does not fit,
 * cut at a UTF-8 character boundary), and to the host at the pace above.
 */
static void name_update(struct k_work *work)
{
	int64_t since;
	size_t len;

	ARG_UNUSED(work);

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	memcpy(sd_name, mailbox.name, sizeof(sd_name));
	k_mutex_unlock(&mailbox_lock);

	if (sd_name[0] == '\0') {
		return;
	}
	since = k_uptime_get() - name_to_host_ms;
	/* Scheduled already: that run takes the newest name. */
	(void)k_work_schedule(&name_to_host_work,
			      (!name_to_host_once || since >= BMS_USER_WRITE_INTERVAL_MS)
				      ? K_NO_WAIT
				      : K_MSEC(BMS_USER_WRITE_INTERVAL_MS - since));

	len = strlen(sd_name);
	sd[0].type = BT_DATA_NAME_COMPLETE;
	if (len > SD_NAME_ROOM) {
		len = SD_NAME_ROOM;
		while (len > 0 && ((uint8_t)sd_name[len] & 0xc0) == 0x80) {
			len--;
		}
		sd[0].type = BT_DATA_NAME_SHORTENED;
	}
	sd[0].data_len = (uint8_t)len;

	/* Nothing advertised yet: the first advertisement carries the name. */
	if (advertising_started) {
		advertising_data_update();
	}
}

static K_WORK_DEFINE(name_work, name_update);

struct notify_ctx {
	const uint8_t *data;
	uint16_t len;
};

static void notify_status(struct bt_conn *conn, void *user_data)
{
	const struct notify_ctx *ctx = user_data;
	int err;

	if (!bt_gatt_is_subscribed(conn, STATUS_ATTR, BT_GATT_CCC_NOTIFY)) {
		return;
	}
	/* BLE-2: with read protection on, the status page is for authenticated links only (the
	 * CCC itself may be written by any link).
	 */
	if (!gatt_status_notified(atomic_get(&read_protection) != 0, authenticated(conn))) {
		return;
	}
	if (!fits_mtu(conn, ctx->len)) {
		LOG_DBG("Status page of %u bytes exceeds the MTU, not notified", ctx->len);
		return;
	}

	err = bt_gatt_notify(conn, STATUS_ATTR, ctx->data, ctx->len);
	if (err && err != -ENOTCONN) {
		LOG_WRN("Status not notified (err %d)", err);
	}
}

static void status_update(struct k_work *work)
{
	struct notify_ctx ctx = {.data = status_data};

	ARG_UNUSED(work);

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	memcpy(status_data, mailbox.status, mailbox.status_len);
	ctx.len = mailbox.status_len;
	k_mutex_unlock(&mailbox_lock);

	bt_conn_foreach(BT_CONN_TYPE_LE, notify_status, &ctx);
}

static K_WORK_DEFINE(status_work, status_update);

/* The indication in flight: its parameters and data live until the client confirms it or the
 * link drops (then .destroy runs).
 */
static struct bt_gatt_indicate_params indicate_params;
static struct indication in_flight;
static atomic_t indicating;

static void indicate_next(struct k_work *work);
static K_WORK_DEFINE(indication_work, indicate_next);

static void indicate_destroy(struct bt_gatt_indicate_params *params)
{
	ARG_UNUSED(params);

	bt_conn_unref(in_flight.conn);
	in_flight.conn = NULL;
	atomic_clear(&indicating);
	k_work_submit(&indication_work);
}

static void indicate_next(struct k_work *work)
{
	int err;

	ARG_UNUSED(work);

	while (!atomic_get(&indicating) && k_msgq_get(&indication_q, &in_flight, K_NO_WAIT) == 0) {
		if (!bt_gatt_is_subscribed(in_flight.conn, CONTROL_POINT_VALUE_ATTR,
					   BT_GATT_CCC_INDICATE)) {
			LOG_DBG("Control-point response dropped: indications not enabled");
		} else if (!fits_mtu(in_flight.conn, in_flight.len)) {
			LOG_WRN("Control-point response of %u bytes exceeds the MTU, not indicated",
				in_flight.len);
		} else {
			indicate_params = (struct bt_gatt_indicate_params){
				.attr = CONTROL_POINT_VALUE_ATTR,
				.data = in_flight.data,
				.len = in_flight.len,
				.destroy = indicate_destroy,
			};
			atomic_set(&indicating, 1);
			err = bt_gatt_indicate(in_flight.conn, &indicate_params);
			if (err == 0) {
				/* indicate_destroy() releases the connection. */
				return;
			}
			atomic_clear(&indicating);
			LOG_WRN("Control-point response not indicated (err %d)", err);
		}
		bt_conn_unref(in_flight.conn);
		in_flight.conn = NULL;
	}
}

/* BLE-2: the bonds the stack holds now, to the core (identity addresses). */
struct bond_list {
	struct bms_bond bonds[BMS_MAX_BONDS];
	size_t count;
};

static void bond_found(const struct bt_bond_info *info, void *user_data)
{
	struct bond_list *list = user_data;
	struct bms_bond *bond;

	if (list->count >= ARRAY_SIZE(list->bonds)) {
		return;
	}
	bond = &list->bonds[list->count++];
	bond->address_type = info->addr.type;
	memcpy(bond->address, info->addr.a.val, sizeof(bond->address));
}

static void bonds_report(struct k_work *work)
{
	struct bond_list list = {0};
	int err;

	ARG_UNUSED(work);

	bt_foreach_bond(BT_ID_DEFAULT, bond_found, &list);
	err = control_post_bonds(list.bonds, list.count);
	if (err) {
		LOG_ERR("Bonds not reported (err %d)", err);
	}
}

static K_WORK_DEFINE(bonds_work, bonds_report);

/* A bond action of the core, with the peer of the control-point write that asked for it. */
struct bond_job {
	struct bms_bond_action action;
	bt_addr_le_t asker;
	bool asker_known;
};

K_MSGQ_DEFINE(bond_q, sizeof(struct bond_job), 4, 4);

static void to_addr(const struct bms_bond *bond, bt_addr_le_t *addr)
{
	addr->type = bond->address_type;
	memcpy(addr->a.val, bond->address, sizeof(addr->a.val));
}

static void unpair(const bt_addr_le_t *addr)
{
	char text[BT_ADDR_LE_STR_LEN];
	int err = bt_unpair(BT_ID_DEFAULT, addr);

	bt_addr_le_to_str(addr, text, sizeof(text));
	if (err) {
		LOG_ERR("Bond %s not removed (err %d)", text, err);
	} else {
		LOG_INF("Bond %s removed", text);
	}
}

struct keep_ctx {
	const bt_addr_le_t *keep;
	bt_addr_le_t remove[BMS_MAX_BONDS];
	size_t count;
};

static void bond_to_remove(const struct bt_bond_info *info, void *user_data)
{
	struct keep_ctx *ctx = user_data;

	if ((ctx->keep == NULL || !bt_addr_le_eq(&info->addr, ctx->keep)) &&
	    ctx->count < ARRAY_SIZE(ctx->remove)) {
		bt_addr_le_copy(&ctx->remove[ctx->count++], &info->addr);
	}
}

static void bond_job_run(const struct bond_job *job)
{
	struct keep_ctx ctx = {0};
	bt_addr_le_t addr;
	int err;

	switch (job->action.kind) {
	case BMS_BOND_ACTION_KIND_REMOVE_ALL:
		/* The button reset: every bond, connected phones included. */
		unpair_pending = false;
		err = bt_unpair(BT_ID_DEFAULT, BT_ADDR_LE_ANY);
		if (err) {
			LOG_ERR("Bonds not removed (err %d)", err);
		} else {
			LOG_INF("Every bond removed");
		}
		break;
	case BMS_BOND_ACTION_KIND_REMOVE_OTHERS:
		/* ChangePasskey: every bond but the asking phone's (none kept if unknown). */
		ctx.keep = job->asker_known ? &job->asker : NULL;
		bt_foreach_bond(BT_ID_DEFAULT, bond_to_remove, &ctx);
		for (size_t i = 0; i < ctx.count; i++) {
			unpair(&ctx.remove[i]);
		}
		break;
	case BMS_BOND_ACTION_KIND_REMOVE:
		to_addr(&job->action.bond, &addr);
		if (job->asker_known && bt_addr_le_eq(&addr, &job->asker)) {
			/* The phone removes its own bond: removing it now would drop the link
			 * before the response is indicated, so it goes when its link drops.
			 */
			bt_addr_le_copy(&unpair_at_disconnect, &addr);
			unpair_pending = true;
			LOG_INF("Bond of the connected phone removed when it disconnects");
			return;
		}
		unpair(&addr);
		break;
	default:
		LOG_ERR("Unknown bond action %u", job->action.kind);
		return;
	}
}

static void bond_actions_run(struct k_work *work)
{
	struct bond_job job;

	ARG_UNUSED(work);

	while (k_msgq_get(&bond_q, &job, K_NO_WAIT) == 0) {
		bond_job_run(&job);
	}
	bonds_report(NULL);
}

static K_WORK_DEFINE(bond_action_work, bond_actions_run);

/* Whether @p conn is an established link (bt_conn_foreach() also gives links being set up or
 * torn down).
 */
static bool link_up(struct bt_conn *conn)
{
	struct bt_conn_info info;

	return bt_conn_get_info(conn, &info) == 0 && info.state == BT_CONN_STATE_CONNECTED;
}

/* The asking phone's own bond, removed once its link is gone (not when the other one drops). */
static void deferred_unpair_run(struct k_work *work)
{
	struct bt_conn *conn;
	bool still_linked = false;

	ARG_UNUSED(work);

	if (!unpair_pending) {
		return;
	}
	conn = bt_conn_lookup_addr_le(BT_ID_DEFAULT, &unpair_at_disconnect);
	if (conn != NULL) {
		still_linked = link_up(conn);
		bt_conn_unref(conn);
	}
	if (!still_linked) {
		unpair_pending = false;
		unpair(&unpair_at_disconnect);
		bonds_report(NULL);
	}
}

static K_WORK_DEFINE(deferred_unpair_work, deferred_unpair_run);

/* M6: the links that are up, the newest of them, and the oldest that is not authenticated
 * other than the newest.
 */
struct links {
	size_t count;
	uint32_t newest;
	struct bt_conn *oldest_guest; /* referenced */
	uint32_t oldest_guest_order;
};

static void count_link(struct bt_conn *conn, void *user_data)
{
	struct links *links = user_data;
	uint32_t order = (uint32_t)atomic_get(&link_order[bt_conn_index(conn)]);

	if (!link_up(conn)) {
		return;
	}
	if (links->count == 0 || (int32_t)(order - links->newest) > 0) {
		links->newest = order;
	}
	links->count++;
}

static void find_oldest_guest(struct bt_conn *conn, void *user_data)
{
	struct links *links = user_data;
	uint32_t order = (uint32_t)atomic_get(&link_order[bt_conn_index(conn)]);

	if (!link_up(conn) || authenticated(conn) || order == links->newest ||
	    atomic_test_bit(pairing_accepted, bt_conn_index(conn))) {
		return;
	}
	if (links->oldest_guest == NULL || (int32_t)(order - links->oldest_guest_order) < 0) {
		if (links->oldest_guest != NULL) {
			bt_conn_unref(links->oldest_guest);
		}
		links->oldest_guest = bt_conn_ref(conn);
		links->oldest_guest_order = order;
	}
}

/* M6: when every connection is taken, the oldest link that is not authenticated (never the
 * newest, which has had no time yet) is disconnected, so the owner can always connect unless
 * the other links are authenticated. Nor a link running a pairing this file accepted: that is
 * an owner setting up (the pairing window is open), and cutting it would also count as a
 * failed attempt; a stalled pairing ends at the Security Manager's 30 s timeout, as a failed
 * attempt with its back-off. Runs after each new link.
 */
static void connections_check(struct k_work *work)
{
	struct links links = {0};
	int err;

	ARG_UNUSED(work);

	bt_conn_foreach(BT_CONN_TYPE_LE, count_link, &links);
	if (links.count < CONFIG_BT_MAX_CONN) {
		return;
	}
	bt_conn_foreach(BT_CONN_TYPE_LE, find_oldest_guest, &links);
	if (links.oldest_guest == NULL) {
		return;
	}
	LOG_WRN("Every connection taken: the oldest unauthenticated link goes");
	err = bt_conn_disconnect(links.oldest_guest, BT_HCI_ERR_REMOTE_LOW_RESOURCES);
	if (err) {
		LOG_ERR("Unauthenticated link not disconnected (err %d)", err);
	}
	bt_conn_unref(links.oldest_guest);
}

static K_WORK_DEFINE(connections_work, connections_check);

/* Whether @p a (a k_uptime_get_32() value) is later than @p b, across the wrap. */
static bool later(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) > 0;
}

struct link_at {
	uint8_t index;
	struct bt_conn *conn; /* referenced */
};

static void find_link_at(struct bt_conn *conn, void *user_data)
{
	struct link_at *at = user_data;

	if (at->conn == NULL && bt_conn_index(conn) == at->index && link_up(conn)) {
		at->conn = bt_conn_ref(conn);
	}
}

/* M6: a link that is still not authenticated when its time limit ends, with read protection
 * on, is disconnected; one running a pairing this file accepted gets another period (the
 * Security Manager's 30 s timeout ends that pairing).
 */
static void link_limit_expired(struct k_work *work)
{
	struct k_work_delayable *limit = k_work_delayable_from_work(work);
	struct link_at at = {.index = (uint8_t)(limit - link_limit)};
	const uint32_t limit_ms = CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S * MSEC_PER_SEC;
	uint32_t since, elapsed;
	int err;

	bt_conn_foreach(BT_CONN_TYPE_LE, find_link_at, &at);
	if (at.conn == NULL) {
		return;
	}
	if (!atomic_get(&read_protection) || authenticated(at.conn)) {
		goto out;
	}
	since = (uint32_t)atomic_get(&link_since_ms[at.index]);
	if (later((uint32_t)atomic_get(&read_protection_since_ms), since)) {
		since = (uint32_t)atomic_get(&read_protection_since_ms);
	}
	elapsed = k_uptime_get_32() - since;
	if (atomic_test_bit(pairing_accepted, at.index)) {
		(void)k_work_schedule(limit, K_MSEC(limit_ms));
	} else if (elapsed < limit_ms) {
		(void)k_work_schedule(limit, K_MSEC(limit_ms - elapsed));
	} else {
		LOG_WRN("Link not authenticated after %d s with read protection on: disconnected",
			CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S);
		err = bt_conn_disconnect(at.conn, BT_HCI_ERR_AUTH_FAIL);
		if (err) {
			LOG_ERR("Unauthenticated link not disconnected (err %d)", err);
		}
	}
out:
	bt_conn_unref(at.conn);
}

static void connected(struct bt_conn *conn, uint8_t err)
{
	uint8_t index;

	if (err) {
		LOG_WRN("Connection failed (err 0x%02x)", err);
		return;
	}

	index = bt_conn_index(conn);
	gatt_session_reset(&sessions[index]);
	atomic_set(&link_since_ms[index], (atomic_val_t)k_uptime_get_32());
	atomic_set(&link_order[index], atomic_inc(&links_seen) + 1);
	atomic_inc(&connections);
	LOG_INF("Connected");

	/* M6: a bonded peer proves it is one now (a phone answers with encryption), so it is
	 * authenticated before another central can take its place.
	 */
	if (bt_le_bond_exists(BT_ID_DEFAULT, bt_conn_get_dst(conn))) {
		int sec_err = bt_conn_set_security(conn, BT_SECURITY_L3);

		if (sec_err) {
			LOG_WRN("Security not requested (err %d)", sec_err);
		}
	}
	if (atomic_get(&read_protection)) {
		(void)k_work_reschedule(&link_limit[index],
					K_SECONDS(CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S));
	}
	k_work_submit(&connections_work);
	/* The controller stopped the connectable set; a connection still free gets it back. */
	k_work_submit(&restart_work);
}

static void disconnected(struct bt_conn *conn, uint8_t reason)
{
	int err;

	gatt_session_reset(&sessions[bt_conn_index(conn)]);
	atomic_dec(&connections);
	/* status_notify: the stack calls status_ccc_changed() with 0 once no connected peer is
	 * subscribed any more (the other link may still be).
	 */
	(void)k_work_cancel_delayable(&link_limit[bt_conn_index(conn)]);
	LOG_INF("Disconnected (reason 0x%02x)", reason);

	/* BLE-2: a link dropped during a pairing it was allowed to start is a failed attempt
	 * (an LE Secure Connections passkey leaks bit by bit, whether or not the peer finishes).
	 */
	if (atomic_test_and_clear_bit(pairing_accepted, bt_conn_index(conn))) {
		atomic_inc(&pairing_results_pending);
		(void)control_post_pairing_result(false);
	}

	/* SET-2: the settings and secrets held back for this link's writes are stored now. */
	err = control_post_flush();
	if (err) {
		LOG_WRN("Flush not requested (err %d)", err);
	}

	k_work_submit(&deferred_unpair_work);
}

static void recycled(void)
{
	k_work_submit(&restart_work);
}

static void security_changed(struct bt_conn *conn, bt_security_t level, enum bt_security_err err)
{
	ARG_UNUSED(conn);

	if (err) {
		LOG_WRN("Security failed: level %u (err %d)", level, err);
	} else {
		LOG_INF("Security level %u", level);
	}
}

BT_CONN_CB_DEFINE(conn_callbacks) = {
	.connected = connected,
	.disconnected = disconnected,
	.recycled = recycled,
	.security_changed = security_changed,
};

static void auth_passkey_display(struct bt_conn *conn, unsigned int key)
{
	ARG_UNUSED(conn);
	ARG_UNUSED(key);

	/* The passkey is the user's secret (BLE-2): never in the log. */
	LOG_INF("Pairing: enter the passkey on the phone");
}

/* The stored passkey goes to the host in the way the Zephyr release has (its Kconfig comes from
 * app/zephyr-version/<release>.conf): asked for at each pairing (4.3+, CONFIG_BT_APP_PASSKEY),
 * or set as the fixed passkey (4.2, CONFIG_BT_FIXED_PASSKEY). Until the core has opened, the
 * host uses a random passkey nobody sees, so pairing fails rather than accept a guessable
 * default.
 */
#if defined(CONFIG_BT_APP_PASSKEY)
static uint32_t auth_app_passkey(struct bt_conn *conn)
{
	ARG_UNUSED(conn);

	if (!atomic_get(&passkey_known)) {
		return BT_PASSKEY_RAND;
	}
	return (uint32_t)atomic_get(&passkey);
}

#define AUTH_APP_PASSKEY .app_passkey = auth_app_passkey,

static void passkey_to_host(void)
{
}
#else
#define AUTH_APP_PASSKEY

static void passkey_to_host(void)
{
	int err = bt_passkey_set(atomic_get(&passkey_known) ? (unsigned int)atomic_get(&passkey)
							    : BT_PASSKEY_INVALID);

	if (err) {
		LOG_ERR("Passkey not given to the host (err %d)", err);
	}
}
#endif

static void auth_cancel(struct bt_conn *conn)
{
	ARG_UNUSED(conn);

	LOG_INF("Pairing cancelled");
}

/* BLE-2: a new pairing only when the core allows it, and not while a result of an earlier
 * attempt is still on its way to it (its back-off is not known yet).
 */
static enum bt_security_err auth_pairing_accept(struct bt_conn *conn,
						const struct bt_conn_pairing_feat *const feat)
{
	ARG_UNUSED(feat);

	if (!atomic_get(&pairing_allowed) || atomic_get(&pairing_results_pending) > 0) {
		LOG_WRN("Pairing refused: not open (press the button) or backing off");
		return BT_SECURITY_ERR_PAIR_NOT_ALLOWED;
	}
	atomic_set_bit(pairing_accepted, bt_conn_index(conn));
	return BT_SECURITY_ERR_SUCCESS;
}

static struct bt_conn_auth_cb auth_cb = {
	.pairing_accept = auth_pairing_accept,
	.passkey_display = auth_passkey_display,
	AUTH_APP_PASSKEY
	.cancel = auth_cancel,
};

/* Reports the end of a pairing this file accepted; refused requests are not attempts. */
static void pairing_ended(struct bt_conn *conn, bool success)
{
	int err;

	if (!atomic_test_and_clear_bit(pairing_accepted, bt_conn_index(conn))) {
		return;
	}
	/* Until the core has taken it, no new pairing starts (auth_pairing_accept). */
	atomic_inc(&pairing_results_pending);
	err = control_post_pairing_result(success);
	if (err) {
		LOG_ERR("Pairing result not handed to the core (err %d)", err);
	}
}

static void pairing_complete(struct bt_conn *conn, bool bonded)
{
	LOG_INF("Pairing complete (%s)", bonded ? "bonded" : "not bonded");
	pairing_ended(conn, true);
	k_work_submit(&bonds_work);
}

static void pairing_failed(struct bt_conn *conn, enum bt_security_err reason)
{
	LOG_WRN("Pairing failed (reason %d)", reason);
	pairing_ended(conn, false);
}

static void bond_deleted(uint8_t id, const bt_addr_le_t *peer)
{
	ARG_UNUSED(id);
	ARG_UNUSED(peer);

	k_work_submit(&bonds_work);
}

static struct bt_conn_auth_info_cb auth_info_cb = {
	.pairing_complete = pairing_complete,
	.pairing_failed = pairing_failed,
	.bond_deleted = bond_deleted,
};

int ble_init(void)
{
	int err;

	err = bt_conn_auth_cb_register(&auth_cb);
	if (err) {
		LOG_ERR("Auth callbacks not registered (err %d)", err);
		return err;
	}

	err = bt_conn_auth_info_cb_register(&auth_info_cb);
	if (err) {
		LOG_ERR("Pairing info callbacks not registered (err %d)", err);
		return err;
	}

	for (size_t i = 0; i < ARRAY_SIZE(link_limit); i++) {
		k_work_init_delayable(&link_limit[i], link_limit_expired);
	}
	atomic_set(&link_limits_ready, 1);

	err = bt_enable(NULL);
	if (err) {
		LOG_ERR("Bluetooth init failed (err %d)", err);
		return err;
	}

	if (IS_ENABLED(CONFIG_BT_SETTINGS)) {
		err = settings_load_subtree("bt");
		if (err) {
			LOG_ERR("Bonds not loaded (err %d)", err);
		}
	}

	/* After the settings: with LE privacy the identity key is among them. */
	err = bt_le_ext_adv_create(&(struct bt_le_adv_param){.id = BT_ID_DEFAULT,
							     .options = ADV_OPT_READOUT,
							     .interval_min = BT_GAP_ADV_FAST_INT_MIN_2,
							     .interval_max = BT_GAP_ADV_FAST_INT_MAX_2},
				   NULL, &readout_set);
	if (err == 0) {
		err = bt_le_ext_adv_create(
			&(struct bt_le_adv_param){.id = BT_ID_DEFAULT,
						  .options = BT_LE_ADV_OPT_CONN,
						  .interval_min = BT_GAP_ADV_FAST_INT_MIN_2,
						  .interval_max = BT_GAP_ADV_FAST_INT_MAX_2},
			NULL, &connectable_set);
	}
	if (err) {
		LOG_ERR("Advertising sets not created (err %d)", err);
		return err;
	}

	/* BLE-2: until the core knows the bonds, it allows no pairing. */
	bonds_report(NULL);

	atomic_set(&ready, 1);
	LOG_INF("Bluetooth ready");

	/* After the bonds: the stored "bt/name" loaded with them is the core's name of before. */
	k_work_submit(&name_work);

	/* The control thread's first advertisement may have come before the host was up. */
	k_work_submit(&advertisement_work);

	return 0;
}

bool ble_ready(void)
{
	return atomic_get(&ready) != 0;
}

bool ble_connected(void)
{
	return atomic_get(&connections) > 0;
}

bool ble_status_subscribed(void)
{
	return atomic_get(&status_notify) != 0;
}

void ble_set_passkey(uint32_t key)
{
	if (key == BLE_NO_PASSKEY) {
		atomic_set(&passkey_known, 0);
	} else if (key > BMS_PASSKEY_MAX) {
		LOG_ERR("Passkey out of range: pairing disabled");
		atomic_set(&passkey_known, 0);
	} else {
		atomic_set(&passkey, (atomic_val_t)key);
		atomic_set(&passkey_known, 1);
	}
	passkey_to_host();
}

void ble_set_name(const uint8_t *name, size_t len)
{
	if (len == 0 || len > BMS_DEVICE_NAME_MAX) {
		LOG_ERR("Device name of %zu bytes not used", len);
		return;
	}

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	memcpy(mailbox.name, name, len);
	mailbox.name[len] = '\0';
	k_mutex_unlock(&mailbox_lock);

	if (atomic_get(&ready)) {
		k_work_submit(&name_work);
	}
}

void ble_post_advertisement(const uint8_t *mfg, size_t len, bool low_power)
{
	if (len > sizeof(mailbox.adv)) {
		LOG_ERR("Advertisement of %zu bytes does not fit", len);
		return;
	}

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	mailbox.adv_posted = true;
	if (len > 0) {
		memcpy(mailbox.adv, mfg, len);
	}
	mailbox.adv_len = (uint8_t)len;
	mailbox.adv_low_power = low_power;
	k_mutex_unlock(&mailbox_lock);

	if (atomic_get(&ready)) {
		k_work_submit(&advertisement_work);
	}
}

void ble_post_status(const uint8_t *status, size_t len)
{
	/* A cut page would be a malformed one: a client that misses it reads the page. */
	if (len > sizeof(mailbox.status)) {
		LOG_WRN("Status of %zu bytes too long to notify", len);
		return;
	}

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	memcpy(mailbox.status, status, len);
	mailbox.status_len = (uint16_t)len;
	k_mutex_unlock(&mailbox_lock);

	k_work_submit(&status_work);
}

static void post_control_response(struct bt_conn *conn, const uint8_t *resp, size_t len)
{
	struct indication msg;

	if (len > sizeof(msg.data)) {
		LOG_WRN("Control-point response of %zu bytes too long", len);
		return;
	}
	msg.len = (uint16_t)len;
	memcpy(msg.data, resp, len);
	msg.conn = bt_conn_ref(conn);

	if (k_msgq_put(&indication_q, &msg, K_NO_WAIT)) {
		LOG_WRN("Indication queue full, control-point response dropped");
		bt_conn_unref(msg.conn);
		return;
	}
	k_work_submit(&indication_work);
}

void ble_set_pairing_allowed(bool allowed, uint32_t results_handled)
{
	/* First the core's new word, then the results it reflects: never the other way. */
	atomic_set(&pairing_allowed, allowed);
	if (results_handled > 0) {
		atomic_sub(&pairing_results_pending, (atomic_val_t)results_handled);
	}
}

void ble_set_read_protection(bool on)
{
	if ((atomic_get(&read_protection) != 0) == on) {
		return;
	}
	/* First when, then that: a limit that expires in between sees the new start. */
	if (on) {
		atomic_set(&read_protection_since_ms, (atomic_val_t)k_uptime_get_32());
	}
	atomic_set(&read_protection, on);
	LOG_INF("Read protection %s", on ? "on" : "off");
	/* The links up now get their time limit; an expiry finds whether there is one. */
	if (on && atomic_get(&link_limits_ready)) {
		for (size_t i = 0; i < ARRAY_SIZE(link_limit); i++) {
			(void)k_work_reschedule(&link_limit[i],
						K_SECONDS(CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S));
		}
	}
}

void ble_post_bond_action(const struct bms_bond_action *action)
{
	struct bond_job job = {.action = *action};

	k_mutex_lock(&mailbox_lock, K_FOREVER);
	job.asker_known = mailbox.control_writer_known;
	bt_addr_le_copy(&job.asker, &mailbox.control_writer);
	k_mutex_unlock(&mailbox_lock);

	if (k_msgq_put(&bond_q, &job, K_NO_WAIT)) {
		LOG_ERR("Bond action %u dropped: queue full", action->kind);
		return;
	}
	k_work_submit(&bond_action_work);
}
