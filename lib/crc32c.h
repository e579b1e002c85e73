/*
 * crc32c.h - CRC32C (Castagnoli), the checksum of journal records and
 * value-log payloads.  Hardware instruction when the CPU has it.
 */
#ifndef LEDGERFS_CRC32C_H
#define LEDGERFS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extend crc (start with 0) over len bytes of buf. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
