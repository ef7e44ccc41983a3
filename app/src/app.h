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
 * Only the control thread calls the library (bms.h threading contract); every other context
 * hands its data over through the control message queue.
 */

#ifndef OPENBMS_APP_H_
#define OPENBMS_APP_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bms.h>

/* Largest GATT value the library is asked for or given (the ATT maximum attribute length). */
#define APP_GATT_MAX_LEN 512
/* Largest manufacturer data (company id included) that fits a legacy advertisement with flags. */
#define APP_ADV_MAX_LEN 26
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
int control_gatt(uint8_t characteristic, bool authenticated, const uint8_t *req, size_t req_len,
		 uint8_t *resp, size_t resp_cap, size_t *resp_len);
uint32_t control_steps(void);

/** ble.c: GATT service, Instant Readout advertising, passkey pairing. */
int ble_init(void);
bool ble_ready(void);
bool ble_connected(void);
bool ble_status_subscribed(void);
void ble_post_advertisement(const uint8_t *mfg, size_t len, bool low_power);
void ble_post_status(const uint8_t *status, size_t len);

/** dfu.c: MCUmgr image-upload hooks and the post-update self-check. */
int dfu_init(void);
int dfu_self_check(void);

#endif /* OPENBMS_APP_H_ */
