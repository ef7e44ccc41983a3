/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The OpenBMS application: one file per job, each with an <file>_init().
 *
 * Threads and who talks to whom:
 *
 *   UART IRQ --ring buffer---------------> control thread --mailbox + k_work--> system work
 *   BT RX (GATT) --ctrl msgq + semaphore-->      |  owns struct bms, makes every    queue (adv.,
 *   BT RX (pairing, bonds) --ctrl msgq---->      |  bms_*() call; reads ADCs, sets  notify,
 *   MCUmgr hooks --ctrl msgq-------------->      |  outputs/LEDs, feeds the task    indicate,
 *   gpio-keys (button) --ctrl msgq-------->      |  watchdog                        bonds)
 *
 * Only the control thread calls the library (bms.h threading contract): it opens the instance
 * itself, so bms_open() runs on its stack. Every other context hands its data over through
 * the control message queue or, for battery-bus bytes, the ring buffer it drains. Requests to
 * the packs go the other way: the control thread hands them to the UART interrupt (bus_send).
 * Wire numbers (characteristics, response status, sizes, passkey range, LED timing) are the
 * core's, from bms.h.
 */

#ifndef OPENBMS_APP_H_
#define OPENBMS_APP_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zephyr/kernel.h>

#include <bms.h>

/* ATT application error of a refused request: BMS_ATT_ERROR_BASE + status (docs/protocol.md). */
#define APP_ATT_ERR_REFUSED(status) (BMS_ATT_ERROR_BASE + (status))

/** storage.c: the settings subsystem on ZMS, behind bms_port.h storage. */
int storage_init(void);

/** io.c: outputs, LEDs and analog inputs of the openbms,bms-io devicetree node. */
int io_init(void);
int io_read_inputs(struct bms_inputs *in);
int io_apply(const struct bms_outputs *out);

struct k_poll_event;

/**
 * bus.c: the battery line's UART; received bytes wait in a ring buffer for the control
 * thread, requests go out through the UART interrupt (with the RS485 driver enabled).
 */
int bus_init(void);
/* Sets @p event up to become ready when bytes arrived (k_poll). */
void bus_poll_event_init(struct k_poll_event *event);
/* Moves up to @p cap received bytes into @p buf; returns how many. */
size_t bus_read(uint8_t *buf, size_t cap);
/* Starts sending @p len bytes (at most BMS_LINE_REQUEST_MAX); returns 0, -EMSGSIZE, or
 * -EBUSY while the previous request is still going out.
 */
int bus_send(const uint8_t *bytes, size_t len);

/* The battery line as the devicetree chose it: the arguments of bms_line_configure(). */
struct bus_line {
	const char *name; /* battery-protocol */
	uint8_t protocol;
	uint32_t baud;
	const uint8_t *addresses;
	size_t count;
};

struct bus_line bus_line(void);

/** retained.c: the core's output state across a warm restart (PROT-1, DFU-1). */
/* Before bms_open(): hands the state kept across a warm reset to the core. */
void retained_restore(void);
/* After each step: keeps the core's output state in retained RAM. */
struct bms;
void retained_save(struct bms *bms);

/** control.c: the control thread, sole owner of the library instance. */
int control_init(void);
int control_start(void);
int control_post_dfu(bms_dfu_t event);
/* BLE-2: the owner's button went down (@p pressed) or up at uptime @p at_ms. */
int control_post_button(bool pressed, int64_t at_ms);
/* BLE-2: a pairing that ble.c accepted ended (@p success: complete, else failed). */
int control_post_pairing_result(bool success);
/* BLE-2: the bonds the BLE stack holds now (at start and after every change). */
int control_post_bonds(const struct bms_bond *bonds, size_t count);
/* SET-2: write the records held back (a link dropped). */
int control_post_flush(void);
int control_gatt(uint8_t characteristic, bool write, bool authenticated, const uint8_t *req,
		 size_t req_len, uint8_t *resp, size_t resp_cap, size_t *resp_len);
uint32_t control_steps(void);
/* DFU-1: waits up to @p timeout for the core's self-check verdict: 1 passed, < 0 failed,
 * 0 still pending when the time is up.
 */
int control_self_check_wait(k_timeout_t timeout);

/**
 * gatt.c: one connection's view of the OpenBMS service, without Bluetooth types: the battery
 * selector it wrote, the page a long read is cut from, and the mapping of a refused request
 * to its ATT error.
 */
struct gatt_session {
	uint8_t selector[BMS_GATT_REQUEST_MAX];
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
/* BLE-2: whether a link subscribed to Status notifications is sent the status page: with
 * @p read_protection on only an @p authenticated one, as for the reads (ble.c's
 * notify_status(); the page is built as for an authenticated link).
 */
bool gatt_status_notified(bool read_protection, bool authenticated);

/** button.c: the owner's button (bms-io pairing-button) to the control thread. */

/** ble.c: GATT service, Instant Readout advertising, passkey pairing, bonds. */
int ble_init(void);
bool ble_ready(void);
bool ble_connected(void);
bool ble_status_subscribed(void);
/* The passkey to pair with; BLE_NO_PASSKEY: none usable, nothing pairs. */
#define BLE_NO_PASSKEY UINT32_MAX
void ble_set_passkey(uint32_t passkey);
void ble_set_name(const uint8_t *name, size_t len);
/* The Instant Readout manufacturer data; @p len 0: none (BLE-3: no packet rather than a
 * placeholder key or a stale one), the device stays connectable.
 */
void ble_post_advertisement(const uint8_t *mfg, size_t len, bool low_power);
void ble_post_status(const uint8_t *status, size_t len);
/* BLE-2: whether a new pairing may start (the core's pairing_allowed), given after
 * @p results_handled more pairing results (control_post_pairing_result) were handled: until
 * every result posted is, ble.c refuses pairing.
 */
void ble_set_pairing_allowed(bool allowed, uint32_t results_handled);
/* BLE-2: a bond action of the core (bms_bond_action), carried out on the system work queue. */
void ble_post_bond_action(const struct bms_bond_action *action);
/* BLE-2: the core's read protection (bms_outputs.read_protection); while on, links that never
 * authenticate are disconnected after CONFIG_BMS_BLE_UNAUTHENTICATED_LINK_S.
 */
void ble_set_read_protection(bool on);

/** dfu.c: MCUmgr image-upload hooks and the post-update self-check. */
int dfu_init(void);
int dfu_self_check(void);
/* DFU-1: the link carrying the upload dropped: the core hears the upload stop (dfu_link.c). */
void dfu_upload_link_lost(void);

/** dfu_link.c (builds with Bluetooth): which link carries an upload; its drop stops it. */
int dfu_link_init(void);

/** dfu_check.c: what an upload and an MCUmgr command must be to be accepted. */
struct dfu_version {
	uint8_t major;
	uint8_t minor;
	uint16_t revision;
};

enum dfu_upload_verdict {
	DFU_UPLOAD_OK,
	/* No MCUboot image header, or sizes that do not fit the upload. */
	DFU_UPLOAD_HEADER_INVALID,
	/* Older (major.minor.revision) than the running image. */
	DFU_UPLOAD_VERSION_OLDER,
	/* Longer than the secondary slot. */
	DFU_UPLOAD_TOO_LARGE,
};

/* Checks the first @p chunk_len bytes of an upload of @p upload_len bytes against the
 * running image's version (NULL: unknown, not compared) and the slot size; stores the
 * offered version in @p offered when the header is valid.
 */
enum dfu_upload_verdict dfu_upload_check(const uint8_t *chunk, size_t chunk_len,
					 size_t upload_len, const struct dfu_version *running,
					 size_t slot_len, struct dfu_version *offered);
enum dfu_command_verdict {
	DFU_COMMAND_OK,
	/* An image-state write while the running image is on test (unconfirmed). */
	DFU_COMMAND_IMAGE_ON_TEST,
	/* An image-state write while the running image's or the secondary slot's version is
	 * unknown (no readable MCUboot image header).
	 */
	DFU_COMMAND_VERSION_UNKNOWN,
	/* An image-state write while the secondary slot holds an image older than the running
	 * one (after an update: the previous image).
	 */
	DFU_COMMAND_SECONDARY_OLDER,
};

/* Whether SMP command (@p group, @p id, @p op) may run. An image-state write ("test" or
 * "confirm" of a slot) runs only on a confirmed image (so only the self-check confirms an
 * image on test) and while the secondary slot holds an image no older than the running one:
 * MCUmgr's hooks do not show which slot the write names, and a "test" of an older image in
 * the secondary slot would boot it without the upload's version check. @p running and
 * @p secondary are the versions in the slots' image headers, NULL when not readable.
 */
enum dfu_command_verdict dfu_command_check(uint16_t group, uint8_t id, uint8_t op,
					   bool image_confirmed,
					   const struct dfu_version *running,
					   const struct dfu_version *secondary);

/* An upload as the core heard of it. */
enum dfu_upload_state {
	DFU_STATE_IDLE,
	DFU_STATE_RUNNING,
	/* The uploading link dropped: the core was told the upload stopped. */
	DFU_STATE_LINK_LOST,
};

enum dfu_upload_event {
	DFU_EVENT_STARTED,       /* first chunk accepted (MCUmgr: DFU started) */
	DFU_EVENT_RESUMED_CHUNK, /* a chunk past the first */
	DFU_EVENT_PENDING,       /* last chunk written (MCUmgr: DFU pending) */
	DFU_EVENT_STOPPED,       /* MCUmgr stopped the upload on an error */
	DFU_EVENT_LINK_LOST,     /* the uploading connection dropped */
};

#define DFU_NO_EVENT (-1)

/* No link is known to carry the upload (none wrote to SMP since the last one dropped). */
#define DFU_UPLOADER_UNKNOWN (-1)

/* Whether authenticated link @p link (bt_conn_index) dropping stops the upload, given
 * @p uploader, the link that last wrote to SMP: only that one carries it; when none is known,
 * any authenticated link may.
 */
bool dfu_drop_stops_upload(int uploader, int link);

/* Advances @p state by @p event; returns the bms_dfu event to give the core, or
 * DFU_NO_EVENT.
 */
int dfu_upload_step(enum dfu_upload_state *state, enum dfu_upload_event event);

#endif /* OPENBMS_APP_H_ */
