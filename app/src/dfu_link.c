/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Firmware update over Bluetooth (DFU-1): the link that carries an upload, and its drop.
 * MCUmgr's own hooks (dfu.c) carry no connection and img_mgmt waits for the client for ever,
 * so the drop of the uploading link stops the upload for the core here
 * (dfu_upload_link_lost()). Built with dfu.c when the build has Bluetooth (app/CMakeLists.txt);
 * dfu_init() registers it.
 */

#include <zephyr/bluetooth/conn.h>
#include <zephyr/bluetooth/gatt.h>
#include <zephyr/bluetooth/uuid.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/mgmt/mcumgr/transport/smp_bt.h>
#include <zephyr/sys/atomic.h>

#include "app.h"

LOG_MODULE_DECLARE(bms_dfu, CONFIG_BMS_LOG_LEVEL);

/* The link that last wrote to SMP: the one carrying an upload (MCUmgr's hooks carry no
 * connection; the GATT write authorization hook does, after the stack's permission check).
 */
static atomic_t uploader = ATOMIC_INIT(DFU_UPLOADER_UNKNOWN);

static bool write_seen(struct bt_conn *conn, const struct bt_gatt_attr *attr)
{
	if (bt_uuid_cmp(attr->uuid, SMP_BT_CHR_UUID) == 0) {
		atomic_set(&uploader, bt_conn_index(conn));
	}
	return true;
}

static const struct bt_gatt_authorization_cb write_watch = {
	.write_authorize = write_seen,
};

/* SMP writes need an authenticated link (CONFIG_MCUMGR_TRANSPORT_BT_PERM_RW_AUTHEN), so a link
 * that was not authenticated cannot be the uploading one: its drop (a guest leaving, or cut by
 * ble.c to free a connection) leaves the upload running. Of two authenticated links only the
 * one that last wrote to SMP carries the upload; the phone resumes it after a drop.
 */
static void disconnected(struct bt_conn *conn, uint8_t reason)
{
	int link = bt_conn_index(conn);
	int was = (int)atomic_get(&uploader);

	if (bt_conn_get_security(conn) < BT_SECURITY_L3 || !dfu_drop_stops_upload(was, link)) {
		return;
	}
	(void)atomic_cas(&uploader, was, DFU_UPLOADER_UNKNOWN);
	LOG_DBG("Link lost (reason 0x%02x)", reason);
	dfu_upload_link_lost();
}

BT_CONN_CB_DEFINE(dfu_conn_callbacks) = {
	.disconnected = disconnected,
};

int dfu_link_init(void)
{
	return bt_gatt_authorization_cb_register(&write_watch);
}
