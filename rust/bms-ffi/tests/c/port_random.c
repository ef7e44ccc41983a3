/* SPDX-License-Identifier: Apache-2.0 */
/* Copyright (c) 2026 The OpenBMS authors */

/* bms_port_random() for tests: deterministic bytes (xorshift32), so that test runs repeat.
 * Linked by the host C harness (tests/c_harness.rs) and by twister-tests/stack, whose
 * mps2/an386 build has no entropy device for the product's app/src/random.c.
 */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "bms_port.h"

int bms_port_random(uint8_t *buf, size_t len)
{
	static uint32_t state = 2463534242u;

	if (buf == NULL && len > 0) {
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		state ^= state << 13;
		state ^= state >> 17;
		state ^= state << 5;
		buf[i] = (uint8_t)state;
	}
	return 0;
}
