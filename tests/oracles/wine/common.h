/* Helpers shared by sstdump.c, sstwrite.c and regstore.c. */
#ifndef WINE_ORACLE_COMMON_H
#define WINE_ORACLE_COMMON_H
#include <windows.h>
#include <wincrypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENC (X509_ASN_ENCODING | PKCS_7_ASN_ENCODING)

static void print_hex(FILE *f, const BYTE *p, DWORD n)
{
    DWORD i;
    for (i = 0; i < n; i++)
        fprintf(f, "%02X", p[i]);
}

/* Print a UTF-16 string as UTF-8, with tab/newline/backslash escaped so the TSV stays one line. */
static void print_wide(FILE *f, const WCHAR *w, int wlen)
{
    int n = WideCharToMultiByte(CP_UTF8, 0, w, wlen, NULL, 0, NULL, NULL);
    char *s = malloc(n + 1), *p;
    WideCharToMultiByte(CP_UTF8, 0, w, wlen, s, n, NULL, NULL);
    s[n] = 0;
    for (p = s; p < s + n; p++) {
        if (*p == '\t') fputs("\\t", f);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\\') fputs("\\\\", f);
        else if (*p == 0) fputs("\\0", f);
        else fputc(*p, f);
    }
    free(s);
}

/* One TSV row per certificate:
 * view  sha1  friendly_name  eku_prop_hex  eku_oids  prop_ids  subject_cn */
static __attribute__((unused)) void print_cert_row(FILE *f, const char *view, PCCERT_CONTEXT cert)
{
    BYTE hash[20];
    DWORD n = sizeof(hash), id;
    BYTE *buf;
    int first;

    fprintf(f, "%s\t", view);
    if (CertGetCertificateContextProperty(cert, CERT_SHA1_HASH_PROP_ID, hash, &n))
        print_hex(f, hash, n);
    else
        fprintf(f, "ERR%08lX", GetLastError());
    fputc('\t', f);

    n = 0;
    if (CertGetCertificateContextProperty(cert, CERT_FRIENDLY_NAME_PROP_ID, NULL, &n)) {
        buf = malloc(n + 2);
        CertGetCertificateContextProperty(cert, CERT_FRIENDLY_NAME_PROP_ID, buf, &n);
        {   /* the value is a NUL-terminated UTF-16LE string; print up to the first NUL */
            const WCHAR *w = (const WCHAR *)buf;
            int wl = 0;
            while ((DWORD)(wl * 2 + 1) < n && w[wl]) wl++;
            if (wl == 0) fputs("<empty>", f);
            else print_wide(f, w, wl);
        }
        free(buf);
    } else
        fputs("<none>", f);
    fputc('\t', f);

    n = 0;
    if (CertGetCertificateContextProperty(cert, CERT_ENHKEY_USAGE_PROP_ID, NULL, &n)) {
        buf = malloc(n ? n : 1);
        CertGetCertificateContextProperty(cert, CERT_ENHKEY_USAGE_PROP_ID, buf, &n);
        print_hex(f, buf, n);
        free(buf);
        fputc('\t', f);
        /* crypt32's own decoding of the property (not the certificate's extension) */
        n = 0;
        if (CertGetEnhancedKeyUsage(cert, CERT_FIND_PROP_ONLY_ENHKEY_USAGE_FLAG, NULL, &n)) {
            CERT_ENHKEY_USAGE *u = malloc(n);
            DWORD i;
            CertGetEnhancedKeyUsage(cert, CERT_FIND_PROP_ONLY_ENHKEY_USAGE_FLAG, u, &n);
            if (u->cUsageIdentifier == 0) fputs("<no-purpose>", f);
            for (i = 0; i < u->cUsageIdentifier; i++)
                fprintf(f, "%s%s", i ? "," : "", u->rgpszUsageIdentifier[i]);
            free(u);
        } else
            fprintf(f, "DECODE_ERR%08lX", GetLastError());
    } else
        fputs("none\t-", f);
    fputc('\t', f);

    first = 1;
    for (id = CertEnumCertificateContextProperties(cert, 0); id;
         id = CertEnumCertificateContextProperties(cert, id)) {
        fprintf(f, "%s%lu", first ? "" : ",", id);
        first = 0;
    }
    if (first) fputs("-", f);
    fputc('\t', f);

    {
        WCHAR name[512];
        DWORD l = CertGetNameStringW(cert, CERT_NAME_SIMPLE_DISPLAY_TYPE, 0, NULL, name, 512);
        if (l > 1) print_wide(f, name, l - 1); else fputs("-", f);
    }
    fputc('\n', f);
}

static __attribute__((unused)) WCHAR *to_wide(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, 0, s, -1, NULL, 0);
    WCHAR *w = malloc(n * sizeof(WCHAR));
    MultiByteToWideChar(CP_UTF8, 0, s, -1, w, n);
    return w;
}

static __attribute__((unused)) BYTE *read_whole_file(const char *path, DWORD *len)
{
    FILE *f = fopen(path, "rb");
    BYTE *b;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc(n ? n : 1);
    if (n && fread(b, 1, n, f) != (size_t)n) { fclose(f); free(b); return NULL; }
    fclose(f);
    *len = (DWORD)n;
    return b;
}

/* property ids Wine 8.0's CRYPT_ReadContextProp accepts (plus the context ids) */
static __attribute__((unused)) int wine_known_prop(DWORD id)
{
    switch (id) {
    case 2: case 3: case 4: case 5: case 9: case 10: case 11: case 12: case 13: case 15:
    case 20: case 21: case 22: case 23: case 24: case 25: case 26: case 27: case 64:
    case 32: case 33: case 34:
        return 1;
    }
    return 0;
}

/* keep only the elements of a group whose ids wine_known_prop accepts; returns the new length */
static __attribute__((unused)) DWORD strip_group(const BYTE *g, DWORD len, BYTE *out)
{
    DWORD p = 0, o = 0;
    while (p + 12 <= len) {
        DWORD id, cb;
        memcpy(&id, g + p, 4);
        memcpy(&cb, g + p + 8, 4);
        if (cb > len - p - 12) break;
        if (wine_known_prop(id)) { memcpy(out + o, g + p, 12 + cb); o += 12 + cb; }
        p += 12 + cb;
    }
    return o;
}
#endif
