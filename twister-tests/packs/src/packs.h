/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * Emulated battery packs on the battery line's UART emulator: they read the requests the
 * firmware sends and answer as a JBD, JK-PB or Daly pack would (the protocol of the
 * devicetree's battery-protocol), with frames built from real packs' captured answers or the
 * makers' protocol documents.
 */

#ifndef OPENBMS_TEST_PACKS_H_
#define OPENBMS_TEST_PACKS_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Packs per line this suite emulates (addresses 1..PACKS_MAX). */
#define PACKS_MAX 2

/* Bytes of a JK-PB status frame (header to checksum) and of a Modbus echo. */
#define JK_STATUS_LEN 300
#define JK_ECHO_LEN   8

/* A JBD response frame for register @p reg with @p len data bytes (DD reg 00 len data
 * checksum 77); returns its length.
 */
size_t jbd_frame(uint8_t reg, const uint8_t *data, uint8_t len, uint8_t *out);

/* A Daly frame from board @p board (1..16) with data id @p id and eight data bytes
 * (A5 board id 08 data sum); returns its length.
 */
size_t daly_frame(uint8_t board, uint8_t id, const uint8_t data[8], uint8_t *out);

/* The captured JK-PB status frame with cell @p cell (0-based) at @p cell_mv (0: as captured)
 * and the charge / discharge switches as given; checksum recomputed.
 */
void jk_status(uint8_t cell, uint16_t cell_mv, bool charge_on, bool discharge_on, uint8_t *out);

/* The Modbus echo of the status trigger from the pack at @p address. */
void jk_echo(uint8_t address, uint8_t *out);

/* Registers the packs on the UART emulator and starts their thread; they are silent at first. */
void packs_start(void);

/* Pack @p address (1..PACKS_MAX) answers, or stays silent. */
void packs_answering(uint8_t address, bool answering);

/* Pack @p address ignores the next request it gets, as a sleeping JBD pack does. */
void packs_sleep(uint8_t address);

/* Pack @p address reports its charge and discharge switches as given. */
void packs_switches(uint8_t address, bool charge_on, bool discharge_on);

/* Pack @p address reports its first cell at @p mv (0: as captured). */
void packs_first_cell_mv(uint8_t address, uint16_t mv);

/* What the packs saw. */
struct packs_seen {
	/* Well-formed requests, per address (index 0 = address 1). */
	uint32_t requests[PACKS_MAX];
	/* Requests per JBD register or Daly data id. */
	uint16_t asked[256];
	/* The first request, as sent. */
	uint8_t first[16];
	size_t first_len;
	/* Request bytes sent with the RS485 driver disabled, and answers that found it still
	 * enabled (both must stay 0 on a line with rs485-de-gpios).
	 */
	uint32_t bytes_without_de;
	uint32_t answers_with_de;
	/* Uptime of each pack's last answer that completed its report (the last query a round
	 * must have, docs/battery-drivers.md: JBD 0x04, JK the trigger, Daly 0x96; the name
	 * and balancing asked after it do not count), -1 before the first.
	 */
	int64_t last_answer_ms[PACKS_MAX];
};

struct packs_seen packs_seen(void);

#endif /* OPENBMS_TEST_PACKS_H_ */
