/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Bluetooth LE: the OpenBMS GATT service (docs/protocol.md), the Instant Readout advertisement
 * (BLE-3) and passkey pairing (BLE-2). GATT requests go to the control thread, which owns the
 * library; this file only maps ATT to bms_gatt_request() and back. Patterns of
 * samples/bluetooth/peripheral_hr (service, callbacks), subsys/bluetooth/services/bas (notify)
 * and samples/subsys/mgmt/mcumgr/smp_svr (advertising restarted from .recycled).
 *
 * Permissions (BLE-2): monitoring pages are readable by anyone; every write that changes the
 * BMS, and the readout key, need an encrypted link authenticated by the passkey (security
 * level 3, BT_GATT_PERM_*_AUTHEN). The stack refuses other requests before they get here; the
 * core is told whether the link is authenticated and checks again.
 */

#include <string.h>

#include <zephyr/bluetooth/bluetooth.h>
#include <zephyr/bluetooth/conn.h>
#include <zephyr/bluetooth/gatt.h>
#include <zephyr/bluetooth/uuid.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/mgmt/mcumgr/transport/smp_bt.h>
#include <zephyr/settings/settings.h>
#include <zephyr/sys/util.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_ble, CONFIG_BMS_LOG_LEVEL);

/* Characteristic numbers of bms_gatt_request() (rust/bms-core/src/protocol.rs, docs/protocol.md). */
enum gatt_characteristic {
	CHR_STATUS = 1,
	CHR_BANK = 2,
	CHR_BATTERY = 3,
	CHR_HISTORY = 4,
	CHR_SETTINGS = 5,
	CHR_CONTROL_POINT = 6,
};

/* fde4NNNN-2435-4d33-8157-077d40b73501: NNNN = 0001 for the service, characteristic + 1. */
#define BMS_UUID(nnnn) BT_UUID_128_ENCODE(0xfde40000 | (nnnn), 0x2435, 0x4d33, 0x8157, 0x077d40b73501)
#define BMS_SVC_UUID       BT_UUID_DECLARE_128(BMS_UUID(0x0001))
#define BMS_CHR_UUID(chr)  BT_UUID_DECLARE_128(BMS_UUID((chr) + 1))

#define CHR(n) ((void *)(uintptr_t)(n))

/* Every response starts [version, status]; status 0 is "ok" (protocol.rs Status). */
#define RESP_STATUS_OFFSET 1
#define RESP_STATUS_OK 0
#define RESP_STATUS_NOT_AUTHENTICATED 6

/* Longest page or response the core produces (protocol.rs MAX_RESPONSE_LEN, one ATT payload
 * at MTU 247).
 */
#define RESPONSE_MAX_LEN 244
BUILD_ASSERT(RESPONSE_MAX_LEN <= APP_GATT_MAX_LEN);

enum ble_msg_type {
	BLE_MSG_ADVERTISEMENT,
	BLE_MSG_STATUS,
	BLE_MSG_CONTROL_RESPONSE,
	BLE_MSG_RESTART,
};

struct ble_msg {
	enum ble_msg_type type;
	bool low_power;
	uint16_t len;
	uint8_t data[RESPONSE_MAX_LEN];
};

K_MSGQ_DEFINE(ble_msgq, sizeof(struct ble_msg), 4, 4);
K_THREAD_STACK_DEFINE(ble_stack, CONFIG_BMS_BLE_STACK_SIZE);
static struct k_thread ble_thread_data;

static atomic_t ready;
static atomic_t connections;
static atomic_t status_notify;
static atomic_t control_indicate;

static uint8_t mfg_data[APP_ADV_MAX_LEN];
static bool advertising_low_power;

static struct bt_data ad[] = {
	BT_DATA_BYTES(BT_DATA_FLAGS, (BT_LE_AD_GENERAL | BT_LE_AD_NO_BREDR)),
	BT_DATA(BT_DATA_MANUFACTURER_DATA, mfg_data, 0),
};

static const struct bt_data sd[] = {
	BT_DATA(BT_DATA_NAME_COMPLETE, CONFIG_BT_DEVICE_NAME, sizeof(CONFIG_BT_DEVICE_NAME) - 1),
#if defined(CONFIG_MCUMGR_TRANSPORT_BT)
	BT_DATA_BYTES(BT_DATA_UUID128_ALL, SMP_BT_SVC_UUID_VAL),
#endif
};

static void post_control_response(const uint8_t *resp, size_t len);

static bool authenticated(struct bt_conn *conn)
{
	return conn != NULL && bt_conn_get_security(conn) >= BT_SECURITY_L3;
}

static uint8_t att_error(int rc)
{
	switch (rc) {
	case -EBADMSG:
	case -EINVAL:
		return BT_ATT_ERR_VALUE_NOT_ALLOWED;
	case -ENOSPC:
		return BT_ATT_ERR_INVALID_ATTRIBUTE_LEN;
	case -EACCES:
	case -EPERM:
		return BT_ATT_ERR_AUTHENTICATION;
	case -EALREADY:
		return BT_ATT_ERR_WRITE_REQ_REJECTED;
	default:
		return BT_ATT_ERR_UNLIKELY;
	}
}

/* ATT requests are handled one at a time (one thread, CONFIG_BT_MAX_CONN=1): static buffers
 * keep the 512-byte values off the Bluetooth stack's thread stack.
 */
static uint8_t value_buf[APP_GATT_MAX_LEN];
static uint8_t write_resp_buf[APP_GATT_MAX_LEN];

static ssize_t read_chr(struct bt_conn *conn, const struct bt_gatt_attr *attr, void *buf,
			uint16_t len, uint16_t offset)
{
	uint8_t chr = (uint8_t)(uintptr_t)attr->user_data;
	size_t value_len = 0;
	int rc;

	rc = control_gatt(chr, authenticated(conn), NULL, 0, value_buf, sizeof(value_buf),
			  &value_len);
	if (rc) {
		LOG_DBG("Read of characteristic %u refused (err %d)", chr, rc);
		return BT_GATT_ERR(att_error(rc));
	}

	return bt_gatt_attr_read(conn, attr, buf, len, offset, value_buf,
				 MIN(value_len, sizeof(value_buf)));
}

static ssize_t write_chr(struct bt_conn *conn, const struct bt_gatt_attr *attr, const void *buf,
			 uint16_t len, uint16_t offset, uint8_t flags)
{
	uint8_t chr = (uint8_t)(uintptr_t)attr->user_data;
	size_t resp_len = 0;
	uint8_t status;
	int rc;

	ARG_UNUSED(flags);

	/* Every request is one whole ATT write: the protocol has no long writes. */
	if (offset != 0) {
		return BT_GATT_ERR(BT_ATT_ERR_INVALID_OFFSET);
	}

	rc = control_gatt(chr, authenticated(conn), buf, len, write_resp_buf,
			  sizeof(write_resp_buf), &resp_len);
	if (rc) {
		LOG_INF("Write to characteristic %u refused (err %d)", chr, rc);
		return BT_GATT_ERR(att_error(rc));
	}

	resp_len = MIN(resp_len, sizeof(write_resp_buf));
	if (chr == CHR_CONTROL_POINT) {
		/* The control point's response (with the key, or why an action was refused)
		 * goes back as an indication (docs/protocol.md).
		 */
		post_control_response(write_resp_buf, resp_len);
	}

	/* BLE-4: a refused request is an ATT error; its reason is in the response status. */
	status = resp_len > RESP_STATUS_OFFSET ? write_resp_buf[RESP_STATUS_OFFSET] : 0xff;
	if (status == RESP_STATUS_NOT_AUTHENTICATED) {
		return BT_GATT_ERR(BT_ATT_ERR_AUTHENTICATION);
	}
	if (status != RESP_STATUS_OK) {
		LOG_INF("Write to characteristic %u refused (status %u)", chr, status);
		return BT_GATT_ERR(BT_ATT_ERR_WRITE_REQ_REJECTED);
	}

	return len;
}

static void status_ccc_changed(const struct bt_gatt_attr *attr, uint16_t value)
{
	ARG_UNUSED(attr);

	atomic_set(&status_notify, value == BT_GATT_CCC_NOTIFY);
}

static void control_ccc_changed(const struct bt_gatt_attr *attr, uint16_t value)
{
	ARG_UNUSED(attr);

	atomic_set(&control_indicate, value == BT_GATT_CCC_INDICATE);
}

/* Attribute indices used below: [1] status declaration, [13] control point value. */
BT_GATT_SERVICE_DEFINE(bms_svc,
	BT_GATT_PRIMARY_SERVICE(BMS_SVC_UUID),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(CHR_STATUS), BT_GATT_CHRC_READ | BT_GATT_CHRC_NOTIFY,
			       BT_GATT_PERM_READ, read_chr, NULL, CHR(CHR_STATUS)),
	BT_GATT_CCC(status_ccc_changed, BT_GATT_PERM_READ | BT_GATT_PERM_WRITE),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(CHR_BANK), BT_GATT_CHRC_READ,
			       BT_GATT_PERM_READ, read_chr, NULL, CHR(CHR_BANK)),
	/* Selecting which battery to read is part of reading, so it is open (BLE-2). */
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(CHR_BATTERY), BT_GATT_CHRC_READ | BT_GATT_CHRC_WRITE,
			       BT_GATT_PERM_READ | BT_GATT_PERM_WRITE, read_chr, write_chr,
			       CHR(CHR_BATTERY)),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(CHR_HISTORY), BT_GATT_CHRC_READ,
			       BT_GATT_PERM_READ, read_chr, NULL, CHR(CHR_HISTORY)),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(CHR_SETTINGS), BT_GATT_CHRC_READ | BT_GATT_CHRC_WRITE,
			       BT_GATT_PERM_READ | BT_GATT_PERM_WRITE_AUTHEN, read_chr, write_chr,
			       CHR(CHR_SETTINGS)),
	BT_GATT_CHARACTERISTIC(BMS_CHR_UUID(CHR_CONTROL_POINT),
			       BT_GATT_CHRC_WRITE | BT_GATT_CHRC_INDICATE,
			       BT_GATT_PERM_WRITE_AUTHEN, NULL, write_chr, CHR(CHR_CONTROL_POINT)),
	BT_GATT_CCC(control_ccc_changed, BT_GATT_PERM_READ | BT_GATT_PERM_WRITE_AUTHEN),
);

#define STATUS_ATTR (&bms_svc.attrs[1])
#define CONTROL_POINT_VALUE_ATTR (&bms_svc.attrs[13])

static void advertise(void)
{
	const struct bt_le_adv_param *param =
		advertising_low_power
			? BT_LE_ADV_PARAM(BT_LE_ADV_OPT_CONN, BT_GAP_ADV_SLOW_INT_MIN,
					  BT_GAP_ADV_SLOW_INT_MAX, NULL)
			: BT_LE_ADV_PARAM(BT_LE_ADV_OPT_CONN, BT_GAP_ADV_FAST_INT_MIN_2,
					  BT_GAP_ADV_FAST_INT_MAX_2, NULL);
	int err;

	err = bt_le_adv_start(param, ad, ARRAY_SIZE(ad), sd, ARRAY_SIZE(sd));
	if (err && err != -EALREADY) {
		LOG_ERR("Advertising failed to start (err %d)", err);
	}
}

static void handle_advertisement(const struct ble_msg *msg)
{
	bool started = ad[1].data_len > 0;
	int err;

	memcpy(mfg_data, msg->data, MIN((size_t)msg->len, sizeof(mfg_data)));
	ad[1].data_len = (uint8_t)MIN((size_t)msg->len, sizeof(mfg_data));

	if (!started || msg->low_power != advertising_low_power) {
		advertising_low_power = msg->low_power;
		(void)bt_le_adv_stop();
		advertise();
		return;
	}

	/* -EAGAIN: not advertising while a central is connected; the data is used at restart. */
	err = bt_le_adv_update_data(ad, ARRAY_SIZE(ad), sd, ARRAY_SIZE(sd));
	if (err && err != -EAGAIN) {
		LOG_ERR("Advertising data not updated (err %d)", err);
	}
}

static void handle_status(const struct ble_msg *msg)
{
	int err;

	err = bt_gatt_notify(NULL, STATUS_ATTR, msg->data, msg->len);
	if (err && err != -ENOTCONN) {
		LOG_WRN("Status not notified (err %d)", err);
	}
}

static struct bt_gatt_indicate_params indicate_params;
static uint8_t indicate_buf[RESPONSE_MAX_LEN];
static K_SEM_DEFINE(indicate_done, 1, 1);

static void indicate_destroy(struct bt_gatt_indicate_params *params)
{
	ARG_UNUSED(params);

	k_sem_give(&indicate_done);
}

static void handle_control_response(const struct ble_msg *msg)
{
	int err;

	if (!atomic_get(&control_indicate)) {
		return;
	}

	/* One indication in flight at a time: the parameters and data must live until the
	 * client confirms it (or the link drops).
	 */
	if (k_sem_take(&indicate_done, K_SECONDS(5))) {
		LOG_WRN("Previous indication not confirmed, response dropped");
		return;
	}

	memcpy(indicate_buf, msg->data, msg->len);
	indicate_params = (struct bt_gatt_indicate_params){
		.attr = CONTROL_POINT_VALUE_ATTR,
		.data = indicate_buf,
		.len = msg->len,
		.destroy = indicate_destroy,
	};

	err = bt_gatt_indicate(NULL, &indicate_params);
	if (err) {
		LOG_WRN("Control-point response not indicated (err %d)", err);
		k_sem_give(&indicate_done);
	}
}

static void ble_thread(void *p1, void *p2, void *p3)
{
	struct ble_msg msg;
	int err;

	ARG_UNUSED(p1);
	ARG_UNUSED(p2);
	ARG_UNUSED(p3);

	err = bt_enable(NULL);
	if (err) {
		LOG_ERR("Bluetooth init failed (err %d)", err);
		return;
	}

	if (IS_ENABLED(CONFIG_BT_SETTINGS)) {
		err = settings_load_subtree("bt");
		if (err) {
			LOG_ERR("Bonds not loaded (err %d)", err);
		}
	}

	atomic_set(&ready, 1);
	LOG_INF("Bluetooth ready");

	for (;;) {
		k_msgq_get(&ble_msgq, &msg, K_FOREVER);

		switch (msg.type) {
		case BLE_MSG_ADVERTISEMENT:
			handle_advertisement(&msg);
			break;
		case BLE_MSG_STATUS:
			handle_status(&msg);
			break;
		case BLE_MSG_CONTROL_RESPONSE:
			handle_control_response(&msg);
			break;
		case BLE_MSG_RESTART:
			if (ad[1].data_len > 0) {
				advertise();
			}
			break;
		}
	}
}

static void post(const struct ble_msg *msg)
{
	/* Never block the sender (the control thread): a full queue drops this update, the
	 * next change sends a fresh one.
	 */
	if (k_msgq_put(&ble_msgq, msg, K_NO_WAIT)) {
		LOG_DBG("BLE queue full, update %d dropped", msg->type);
	}
}

static void connected(struct bt_conn *conn, uint8_t err)
{
	if (err) {
		LOG_WRN("Connection failed (err 0x%02x)", err);
		return;
	}

	atomic_inc(&connections);
	LOG_INF("Connected");
}

static void disconnected(struct bt_conn *conn, uint8_t reason)
{
	atomic_dec(&connections);
	atomic_set(&status_notify, 0);
	atomic_set(&control_indicate, 0);
	LOG_INF("Disconnected (reason 0x%02x)", reason);
}

static void recycled(void)
{
	struct ble_msg msg = {.type = BLE_MSG_RESTART};

	post(&msg);
}

static void security_changed(struct bt_conn *conn, bt_security_t level, enum bt_security_err err)
{
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

static void auth_passkey_display(struct bt_conn *conn, unsigned int passkey)
{
	ARG_UNUSED(conn);

	LOG_INF("Pairing: enter passkey %06u on the phone", passkey);
}

static uint32_t auth_app_passkey(struct bt_conn *conn)
{
	ARG_UNUSED(conn);

	return CONFIG_BMS_BLE_PASSKEY;
}

static void auth_cancel(struct bt_conn *conn)
{
	ARG_UNUSED(conn);

	LOG_INF("Pairing cancelled");
}

static struct bt_conn_auth_cb auth_cb = {
	.passkey_display = auth_passkey_display,
	.app_passkey = auth_app_passkey,
	.cancel = auth_cancel,
};

int ble_init(void)
{
	int err;

	err = bt_conn_auth_cb_register(&auth_cb);
	if (err) {
		LOG_ERR("Auth callbacks not registered (err %d)", err);
		return err;
	}

	k_thread_create(&ble_thread_data, ble_stack, K_THREAD_STACK_SIZEOF(ble_stack), ble_thread,
			NULL, NULL, NULL, CONFIG_BMS_BLE_PRIORITY, 0, K_NO_WAIT);
	k_thread_name_set(&ble_thread_data, "bms_ble");

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

void ble_post_advertisement(const uint8_t *mfg, size_t len, bool low_power)
{
	struct ble_msg msg = {.type = BLE_MSG_ADVERTISEMENT, .low_power = low_power};

	if (len > sizeof(mfg_data)) {
		LOG_ERR("Advertisement of %zu bytes does not fit", len);
		return;
	}
	msg.len = (uint16_t)len;
	memcpy(msg.data, mfg, len);
	post(&msg);
}

void ble_post_status(const uint8_t *status, size_t len)
{
	struct ble_msg msg = {.type = BLE_MSG_STATUS};

	/* A cut page would be a malformed one: a client that misses it reads the page. */
	if (len > sizeof(msg.data)) {
		LOG_WRN("Status of %zu bytes too long to notify", len);
		return;
	}
	msg.len = (uint16_t)len;
	memcpy(msg.data, status, len);
	post(&msg);
}

static void post_control_response(const uint8_t *resp, size_t len)
{
	struct ble_msg msg = {.type = BLE_MSG_CONTROL_RESPONSE};

	if (len > sizeof(msg.data)) {
		LOG_WRN("Control-point response of %zu bytes too long", len);
		return;
	}
	msg.len = (uint16_t)len;
	memcpy(msg.data, resp, len);
	post(&msg);
}
