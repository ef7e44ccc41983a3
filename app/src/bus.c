/*
 * SPDX-License-Identifier: Apache-2.0
 * Copyright (c) 2026 The OpenBMS authors
 *
 * The battery line: the UART of the openbms,bms-io node's battery-bus, and what its
 * battery-protocol, battery-addresses / battery-scan and rs485-de-gpios properties say.
 *
 * Receiving: the UART interrupt moves bytes into a ring buffer and signals the control
 * thread, which drains the buffer straight into the core (bms_feed_bus). Sending: the
 * control thread hands over the request the core asks for (bms_line_poll); the interrupt
 * fills the UART FIFO with it, with the RS485 driver enabled and the receiver off until the
 * last bit is out, then drops the line's echo (the pattern of Zephyr's Modbus serial
 * transport, subsys/modbus/modbus_serial.c). Nothing here interprets a byte: framing,
 * addresses, checksums and timing are the core's. Receive pattern of
 * samples/drivers/uart/echo_bot.
 */

#include <string.h>

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/gpio.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/sys/atomic.h>
#include <zephyr/sys/ring_buffer.h>
#include <zephyr/sys/util.h>

#include "app.h"

LOG_MODULE_REGISTER(bms_bus, CONFIG_BMS_LOG_LEVEL);

#define BMS_IO   DT_COMPAT_GET_ANY_STATUS_OKAY(openbms_bms_io)
#define BUS_UART DT_PHANDLE(BMS_IO, battery_bus)

BUILD_ASSERT(!(DT_NODE_HAS_PROP(BMS_IO, battery_addresses) &&
	       DT_NODE_HAS_PROP(BMS_IO, battery_scan)),
	     "openbms,bms-io: give battery-addresses or battery-scan, not both");

/* The binding's names are the core's protocols; their numbers stay in bms.h. */
#if DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, jbd)
#define LINE_PROTOCOL BMS_PROTOCOL_JBD
#elif DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, jk)
#define LINE_PROTOCOL BMS_PROTOCOL_JK
#elif DT_ENUM_HAS_VALUE(BMS_IO, battery_protocol, daly)
#define LINE_PROTOCOL BMS_PROTOCOL_DALY
#else
#define LINE_PROTOCOL BMS_PROTOCOL_OPENBMS
#endif

#if DT_NODE_HAS_PROP(BMS_IO, battery_addresses)
static const uint8_t line_addresses[] = DT_PROP(BMS_IO, battery_addresses);
#define LINE_ADDRESSES line_addresses
#define LINE_COUNT     ARRAY_SIZE(line_addresses)
#else
/* NULL with a count: addresses 1..N (bms_line_configure). */
#define LINE_ADDRESSES NULL
#define LINE_COUNT     DT_PROP_OR(BMS_IO, battery_scan, 0)
#endif

static const struct device *const bus_uart = DEVICE_DT_GET(BUS_UART);
static const struct gpio_dt_spec bus_de = GPIO_DT_SPEC_GET_OR(BMS_IO, rs485_de_gpios, {0});

/* One producer (the UART interrupt), one consumer (the control thread): no lock needed. */
RING_BUF_DECLARE(rx_ring, CONFIG_BMS_BUS_RX_BUF_SIZE);
static K_SEM_DEFINE(rx_sem, 0, 1);
static atomic_t rx_dropped;

/* The request being sent: written by bus_send() while tx_busy is clear, then read only by the
 * interrupt until it clears tx_busy again.
 */
static uint8_t tx_buf[BMS_LINE_REQUEST_MAX];
static size_t tx_len;
static size_t tx_done;
static atomic_t tx_busy;

static void rx_isr(const struct device *dev)
{
	uint8_t buf[32];
	int len;

	while ((len = uart_fifo_read(dev, buf, sizeof(buf))) > 0) {
		uint32_t put = ring_buf_put(&rx_ring, buf, (uint32_t)len);

		if (put < (uint32_t)len) {
			atomic_add(&rx_dropped, (atomic_val_t)((uint32_t)len - put));
		}
	}

	k_sem_give(&rx_sem);
}

static void tx_isr(const struct device *dev)
{
	uint8_t echo[16];
	int sent;

	if (tx_done < tx_len) {
		sent = uart_fifo_fill(dev, &tx_buf[tx_done], (int)(tx_len - tx_done));
		if (sent > 0) {
			tx_done += (size_t)sent;
		}
		return;
	}

	/* Keep the driver on until the last stop bit is out, or the request is cut short. */
	if (!uart_irq_tx_complete(dev)) {
		return;
	}

	uart_irq_tx_disable(dev);
	if (bus_de.port != NULL) {
		(void)gpio_pin_set_dt(&bus_de, 0);
	}
	/* What the receiver heard while sending is the request itself. */
	while (uart_fifo_read(dev, echo, sizeof(echo)) > 0) {
	}
	uart_irq_rx_enable(dev);
	atomic_clear(&tx_busy);
}

static void uart_cb(const struct device *dev, void *user_data)
{
	ARG_UNUSED(user_data);

	if (!uart_irq_update(dev)) {
		return;
	}

	if (uart_irq_rx_ready(dev)) {
		rx_isr(dev);
	}

	if (atomic_get(&tx_busy) && uart_irq_tx_ready(dev)) {
		tx_isr(dev);
	}
}

void bus_poll_event_init(struct k_poll_event *event)
{
	k_poll_event_init(event, K_POLL_TYPE_SEM_AVAILABLE, K_POLL_MODE_NOTIFY_ONLY, &rx_sem);
}

size_t bus_read(uint8_t *buf, size_t cap)
{
	atomic_val_t dropped;

	/* Taken before reading: bytes that arrive meanwhile give the semaphore again. */
	(void)k_sem_take(&rx_sem, K_NO_WAIT);

	dropped = atomic_set(&rx_dropped, 0);
	if (dropped > 0) {
		LOG_WRN("Battery bus: %ld bytes dropped (receive buffer full)", (long)dropped);
	}

	return ring_buf_get(&rx_ring, buf, (uint32_t)MIN(cap, UINT32_MAX));
}

int bus_send(const uint8_t *bytes, size_t len)
{
	if (len == 0 || len > sizeof(tx_buf)) {
		return -EMSGSIZE;
	}
	if (!atomic_cas(&tx_busy, 0, 1)) {
		return -EBUSY;
	}

	memcpy(tx_buf, bytes, len);
	tx_len = len;
	tx_done = 0;

	uart_irq_rx_disable(bus_uart);
	if (bus_de.port != NULL) {
		(void)gpio_pin_set_dt(&bus_de, 1);
	}
	uart_irq_tx_enable(bus_uart);

	return 0;
}

struct bus_line bus_line(void)
{
	return (struct bus_line){
		.name = DT_PROP(BMS_IO, battery_protocol),
		.protocol = LINE_PROTOCOL,
		/* The UART node's speed: one place says it, for the UART and for the core. */
		.baud = DT_PROP_OR(BUS_UART, current_speed, 0),
		.addresses = LINE_ADDRESSES,
		.count = LINE_COUNT,
	};
}

int bus_init(void)
{
	int err;

	if (!device_is_ready(bus_uart)) {
		LOG_ERR("Battery-bus UART %s not ready", bus_uart->name);
		return -ENODEV;
	}

	if (bus_de.port != NULL) {
		if (!gpio_is_ready_dt(&bus_de)) {
			LOG_ERR("RS485 driver-enable GPIO not ready");
			return -ENODEV;
		}
		err = gpio_pin_configure_dt(&bus_de, GPIO_OUTPUT_INACTIVE);
		if (err) {
			LOG_ERR("RS485 driver-enable GPIO not configured (err %d)", err);
			return err;
		}
	}

	err = uart_irq_callback_user_data_set(bus_uart, uart_cb, NULL);
	if (err) {
		LOG_ERR("UART callback not set (err %d)", err);
		return err;
	}

	uart_irq_rx_enable(bus_uart);

	return 0;
}
