/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The OpenBMS application: one file per job, each with an <file>_init().
 *
 * Threads and who talks to whom:
 *
 *   UART IRQ --ring--> bus thread --ctrl msgq--> control thread --ble msgq--> BLE thread
 *   BT RX (GATT) --ctrl msgq + semaphore------->      |  owns struct bms, makes every bms_*()
 *   MCUmgr hooks --ctrl msgq------------------->      |  call; reads ADCs, sets outputs/LEDs,
 *                                                     |  feeds the task watchdog
 *
 * Only the control thread calls the library (bms.h threading contract): it opens the instance
 * itself, so bms_open() runs on its stack. Every other context hands its data over through
 * the control message queue.
 */

#ifndef OPENBMS_APP_H_
#define OPENBMS_APP_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bms.h>

/* Characteristic numbers of bms_gatt_request() (rust/bms-core/src/protocol/wire.rs, docs/protocol.md). */
enum app_chr {
	APP_CHR_STATUS = 1,
	APP_CHR_BANK = 2,
	APP_CHR_BATTERY = 3,
	APP_CHR_HISTORY = 4,
	APP_CHR_SETTINGS = 5,
	APP_CHR_CONTROL_POINT = 6,
};

/* Every response starts [version, status]; status 0 is Ok (docs/protocol.md). */
#define APP_RESP_STATUS_OFFSET 1
#define APP_RESP_STATUS_OK 0
/* Longest request the core accepts (docs/protocol.md "Message sizes"): the battery selector a
 * connection keeps is never longer.
 */
#define APP_GATT_REQUEST_MAX 32
/* ATT application error for a refused request: 0x80 + protocol status (docs/protocol.md). */
#define APP_ATT_ERR_REFUSED(status) (0x80 + (status))
/* Battery-bus bytes handed over per message: one whole frame (88 bytes) fits. */
#define APP_BUS_CHUNK_LEN 96

/** storage.c: the settings subsystem on ZMS, behind bms_port.h storage. */
int storage_init(void);

/** io.c: outputs, LEDs and analog inputs of the openbms,bms-io devicetree node. */
int io_init(void);
int io_read_inputs(struct bms_inputs *in);
int io_apply(const struct bms_outputs *out);

/** bus.c: the battery-bus UART and its receive thread. */
int bus_init(void);

/** control.c: the control thread, sole owner of the library instance. */
int control_init(void);
int control_start(void);
int control_post_bus(const uint8_t *bytes, size_t len);
int control_post_dfu(bms_dfu_t event);
int control_gatt(uint8_t characteristic, bool write, bool authenticated, const uint8_t *req,
		 size_t req_len, uint8_t *resp, size_t resp_cap, size_t *resp_len);
uint32_t control_steps(void);
/* DFU-1: the core's self-check verdict after the last step: 0 pending, 1 passed, < 0 failed. */
int control_self_check(void);

/**
 * gatt.c: one connection's view of the OpenBMS service, without Bluetooth types: the battery
 * selector it wrote, the page a long read is cut from, and the mapping of a refused request
 * to its ATT error.
 */
struct gatt_session {
	uint8_t selector[APP_GATT_REQUEST_MAX];
	uint8_t selector_len;
	uint8_t value_chr;
	uint16_t value_len;
	uint8_t value[BMS_GATT_RESPONSE_MAX];
};

void gatt_session_reset(struct gatt_session *s);
int gatt_read(struct gatt_session *s, uint8_t chr, bool authenticated, uint16_t offset,
	      const uint8_t **value, size_t *value_len);
int gatt_write(struct gatt_session *s, uint8_t chr, bool authenticated, const uint8_t *req,
	       size_t req_len, uint8_t *resp, size_t resp_cap, size_t *resp_len);

/** ble.c: GATT service, Instant Readout advertising, passkey pairing. */
int ble_init(void);
bool ble_ready(void);
bool ble_connected(void);
bool ble_status_subscribed(void);
void ble_set_passkey(uint32_t passkey);
void ble_post_advertisement(const uint8_t *mfg, size_t len, bool low_power);
void ble_post_status(const uint8_t *status, size_t len);

/** dfu.c: MCUmgr image-upload hooks and the post-update self-check. */
int dfu_init(void);
int dfu_self_check(void);

#endif /* OPENBMS_APP_H_ */
