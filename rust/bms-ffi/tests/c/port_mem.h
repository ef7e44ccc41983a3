/* SPDX-License-Identifier: Apache-2.0 */
/* Copyright (c) 2026 The OpenBMS authors */

/* bms_port.h for the host tests: records in RAM, log lines kept for inspection. */

#ifndef PORT_MEM_H
#define PORT_MEM_H

#include <stdbool.h>
#include <stddef.h>

/* Forget every record and log line and clear the fault switches. */
void port_mem_reset(void);

/* How many kept log lines contain @p needle. */
int port_mem_log_count(const char *needle);

/* Print every kept log line to stdout (for a failing scenario). */
void port_mem_log_dump(void);

/* Number of successful bms_port_storage_write calls since the last reset. */
int port_mem_writes(void);

/* Make every following bms_port_storage_write fail with -EIO (true) or work again (false). */
void port_mem_fail_writes(bool fail);

/* Make every following bms_port_storage_read fail with -EIO (true) or work again (false). */
void port_mem_fail_reads(bool fail);

/* Flip bit @p bit of the record under @p key; false when there is no such record or bit. */
bool port_mem_flip_bit(const char *key, size_t bit);

/* Copy the record under @p key into @p buf; false when absent or longer than @p cap. */
bool port_mem_get(const char *key, unsigned char *buf, size_t cap, size_t *len);

/* Calls that broke bms_port.h's rules (bad key, level or length) since the last reset. */
int port_mem_bad_calls(void);

struct bms;

/* From now on, each bms_port_log call calls back into the library on @p bms (which the
 * threading contract forbids), and keeps the status that call got; NULL stops it. */
void port_mem_reenter(struct bms *bms);

/* The status of the last call back made because of port_mem_reenter(), 1 if none was made. */
int port_mem_reentry_status(void);

/* From now on, each bms_port_log call calls every bms.h entry point on @p bms (bms_open,
 * bms_close and the setters included) and notes the first that was not refused with
 * BMS_EBUSY; NULL stops it. */
void port_mem_reenter_all(struct bms *bms);

/* The name of the first call back that port_mem_reenter_all() saw accepted, NULL if none. */
const char *port_mem_reentry_accepted(void);

/* How many calls back port_mem_reenter_all() made. */
int port_mem_reentry_calls(void);

#endif /* PORT_MEM_H */
