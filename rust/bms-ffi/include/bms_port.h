/* SPDX-License-Identifier: Apache-2.0 */
/* Copyright (c) 2026 The OpenBMS authors */

/**
 * @file bms_port.h
 * What the OpenBMS library needs from the platform.
 *
 * The library (see bms.h) calls these functions; the Zephyr application implements them
 * (storage.c on the settings subsystem, log output on Zephyr logging), and so do the C tests.
 * They are called only from inside bms_*() calls, so only from the thread that owns the BMS
 * instance: an implementation needs no locking of its own against the library.
 *
 * Return values are 0 or a negative errno in Zephyr's numbering (BMS_E* in bms.h).
 * Rust bindings to this header are generated with bindgen into rust/bms-ffi/src/port_sys.rs
 * (committed; the tests fail when they are out of date).
 */

#ifndef BMS_PORT_H
#define BMS_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Read the record stored under @p key into @p buf.
 *
 * @param key  NUL-terminated record name, at most 15 characters ("bms/settings", ...).
 * @param buf  Where to copy the record.
 * @param cap  Size of @p buf in bytes.
 * @param len  Set to the record's length on success.
 * @retval 0        the whole record was copied.
 * @retval -ENOENT  no record under @p key (first start, or deleted).
 * @retval -ENOSPC  the record is longer than @p cap (nothing usable was copied).
 * @retval -EIO     the storage could not be read.
 */
int bms_port_storage_read(const char *key, uint8_t *buf, size_t cap, size_t *len);

/**
 * Store @p len bytes under @p key, replacing any earlier record. The record must survive a
 * reset once this returns 0. The library writes a record only when it changed, and at most
 * a few times per hour in normal operation (MON-8).
 *
 * @retval 0     stored.
 * @retval -EIO  not stored (the library keeps going and retries at the next change).
 */
int bms_port_storage_write(const char *key, const uint8_t *buf, size_t len);

/**
 * Remove the record under @p key (factory reset, history reset).
 *
 * @retval 0        removed, or there was none.
 * @retval -EIO     not removed.
 */
int bms_port_storage_delete(const char *key);

/**
 * Fill @p buf with @p len cryptographically secure random bytes (Zephyr: sys_csrand_get()).
 * Called when the device makes its Instant Readout key (first start, or the stored secrets
 * were lost) and for the first advertisement nonce after a lost nonce record.
 *
 * @retval 0     @p buf is filled.
 * @retval -EIO  no random bytes available (the library retries at the next bms_open()).
 */
int bms_port_random(uint8_t *buf, size_t len);

/**
 * One log record of the library. @p msg is @p len bytes of UTF-8 text, not NUL-terminated,
 * valid only during the call. Zephyr's LOG_* macros copy string arguments held in RAM, so
 * LOG_INF("%.*s", (int)len, msg) is safe in deferred mode too.
 *
 * @param level  1 error, 2 warning, 3 info, 4 debug, 5 trace.
 */
void bms_port_log(uint8_t level, const char *msg, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* BMS_PORT_H */
