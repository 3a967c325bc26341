/**
 * Every ORU, OUL, ORM, OML and ADT message of the fixtures (and, when present, of the whole shared corpus) goes over a real MLLP socket and must get AA
 * (CA in enhanced mode) or the negative ACK listed here, whose ERR names that message's actual defect.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Hl7v2Message } from '../../facades/hl7v2/message.js';
import { corpusFiles } from './corpus-files.js';
import { DB_KINDS } from './test-db.js';
import { dataSets } from '../../tools/shared-data.js';
import { MllpClient, startHarness, type Harness } from './harness.js';

/**
 * file, ACK code, start of the ERR text naming the defect (each checked by hand against the file). The corpus
 * reuses order numbers across patients (the IHE/NIST "realm" examples share filler 9700123 for different
 * patients, two MDHHS OML share a placer number): the first one filed keeps it, the later ones are refused.
 */
const NEGATIVE: Array<[string, string, string]> = [
  ["corpus/oru-lab/hapi_NewPipeParserTest_L1000.hl7", "AE", "no OBR/OBX: the message carries no results"],
  ["corpus/oru-lab/hapi_NewPipeParserTest_L694.hl7", "AE", "line 3 'String||20090505||||||F' is not a seg"],
  ["corpus/oru-lab/hapi_NewPipeParserTest_L847.hl7", "AE", "PID segment missing: the results cannot be fi"],
  ["corpus/oru-lab/hapi_NewPipeParserTest_L911.hl7", "AE", "PID segment missing: the results cannot be fi"],
  ["corpus/oru-lab/hapi_NewPipeParserTest_L930.hl7", "AE", "PID segment missing: the results cannot be fi"],
  ["corpus/oru-lab/hapi_NewPipeParserTest_L961.hl7", "AE", "PID segment missing: the results cannot be fi"],
  ["corpus/oru-lab/lfh_FHIRConverterTest_L329.hl7", "AE", "PID-3 patient identifier list is empty: the p"],
  ["corpus/oru-lab/lfh_Hl7IdentifierFHIRConversionTest_L511.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["corpus/oru-lab/lfh_Hl7IdentifierFHIRConversionTest_L562.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["corpus/oru-lab/lfh_Hl7MessageTest_L401.hl7", "CE", "no OBR/OBX: the message carries no results"],
  ["corpus/oru-lab/lfh_Hl7PatientFHIRConversionTest_L469.hl7", "CE", "no OBR/OBX: the message carries no results"],
  ["corpus/oru-lab/lfh_Hl7PatientFHIRConversionTest_L478.hl7", "CE", "no OBR/OBX: the message carries no results"],
  ["corpus/oru-lab/lfh_ORU-multiline-short-mixed.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["corpus/oru-lab/lfh_ORU-multiline-short.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["corpus/oru-lab/msfc_ORU-R01-01.hl7", "CE", "OBX-2 RP attachment before any OBR: no report"],
  ["corpus/oru-lab/nhc_valid_realm_realm-animal-rabies.hl7", "CE", "OBR-3 filler order number 9700123^Lab^2.16.84"],
  ["corpus/oru-lab/nhc_valid_realm_realm-campylobacter-jejuni.hl7", "CE", "OBR-3 filler order number 9700123^Lab^2.16.84"],
  ["corpus/oru-lab/nhc_valid_realm_realm-cj-badloinc.hl7", "CE", "OBR-3 filler order number 9700123^Lab^2.16.84"],
  ["corpus/oru-lab/nhc_valid_realm_realm-cj-joeslab.hl7", "CE", "OBR-3 filler order number 9700123^Lab^2.16.84"],
  ["corpus/oru-lab/nhc_valid_realm_realm-cj.hl7", "CE", "OBR-3 filler order number 9700123^Lab^2.16.84"],
  ["corpus/oru-lab/nhc_valid_realm_realm-hepatitis-c-virus.hl7", "CE", "OBR-3 filler order number 9700123^Lab^2.16.84"],
  ["corpus/oru-lab/simplehl7_oru-imm.hl7", "CE", "OBX-2 value type 'CE30955-9' is not an accept"],
  ["corpus/adt/hapi_NewPipeParserTest_L1139.hl7", "AE", "PID-3 patient identifier list is empty: the p"],
  ["corpus/adt/hapi_NewPipeParserTest_L634.hl7", "AE", "ADT^A06 without a PID segment"],
  ["corpus/adt/lfh_HL7MergeFHIRConversionTest_L34.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/adt/lfh_Hl7MessageTest_L159.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/adt/lfh_Hl7MessageTest_L193.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/adt/lfh_Hl7MessageTest_L231.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/adt/lfh_Hl7MessageTest_L263.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/adt/lfh_Hl7MessageTest_L54.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/adt/lfh_Hl7ObservationFHIRConversionTest_L53.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/orm/hapi_NewPipeParserTest_L521.hl7", "AR", "processing id '1' is not accepted (accepted: "],
  ["corpus/orm/lfh_Hl7ORMMessageTest_L125.hl7", "AE", "ORC followed by RXO: pharmacy orders are not "],
  ["corpus/orm/lfh_Hl7ORMMessageTest_L172.hl7", "AE", "ORC followed by RXO: pharmacy orders are not "],
  ["corpus/orm/lfh_Hl7ORMMessageTest_L206.hl7", "AE", "ORC followed by RXO: pharmacy orders are not "],
  ["corpus/orm/lfh_Hl7ORMMessageTest_L223.hl7", "AE", "PID segment missing: the order names no patie"],
  ["corpus/orm/lfh_Hl7ORMMessageTest_L253.hl7", "AE", "ORC followed by RXO: pharmacy orders are not "],
  ["corpus/orm/lfh_Hl7ORMMessageTest_L43.hl7", "AE", "PID segment missing: the order names no patie"],
  ["corpus/orm/lfh_Hl7ORMMessageTest_L62.hl7", "AE", "ORC followed by RXO: pharmacy orders are not "],
  ["corpus/orm/nhc_valid_catalyze-io_orm-example.hl7", "AE", "line 7 '8866||||||||Final||^^^20' is not a se"],
  ["corpus/oml/hapi_example_oml_o21_part11.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/hapi_example_oml_o21_part12.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/lfh_HL7OMLMessageTest_L112.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/lfh_HL7OMLMessageTest_L152.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/lfh_HL7OMLMessageTest_L190.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/lfh_HL7OMLMessageTest_L226.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/lfh_HL7OMLMessageTest_L254.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/lfh_HL7OMLMessageTest_L42.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/lfh_HL7OMLMessageTest_L81.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/oml/msfc_MDHHS-OML-O21-2.hl7", "CE", "OBR-2 placer order number ORD723222^^2.16.840"],
  ["corpus/other/msfc_OUL-R22-01.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["corpus/other/msfc_OUL-R24-01.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["corpus/odd/hapi_NewPipeParserTest_L1019.hl7", "AE", "PID-3 patient identifier list is empty: the p"],
  ["corpus/odd/hapi_NewPipeParserTest_L1031.hl7", "AE", "PID-3 patient identifier list is empty: the p"],
  ["corpus/odd/hapi_NewPipeParserTest_L1039.hl7", "AE", "PID-3 patient identifier list is empty: the p"],
  ["corpus/odd/hapi_NewPipeParserTest_L1046.hl7", "AE", "PID-3 patient identifier list is empty: the p"],
  ["corpus/odd/hapi_NewPipeParserTest_L1174.hl7", "AE", "line 2 'I|||13198751^^^^^Big Lab' is not a se"],
  ["corpus/odd/hapi_NewPipeParserTest_L1184.hl7", "CE", "PID segment missing: the results cannot be fi"],
  ["corpus/odd/hapi_NewPipeParserTest_L1196.hl7", "AR", "version '2.999' is not supported (accepted: 2"],
  ["corpus/odd/hapi_NewPipeParserTest_L1215.hl7", "AE", "PID segment missing: the results cannot be fi"],
  ["corpus/odd/hapi_NewPipeParserTest_L1233.hl7", "AE", "PID segment missing: the results cannot be fi"],
  ["corpus/odd/hapi_NewPipeParserTest_L493.hl7", "CE", "PID-3 patient identifier list is empty: the p"],
  ["corpus/odd/hapi_NewPipeParserTest_L770.hl7", "AE", "'43865896' is not an HL7 timestamp (YYYY[MM[D"],
  ["corpus/odd/lfh_Hl7ORMMessageTest_L28.hl7", "AE", "PID segment missing: the order names no patie"],
  ["corpus/odd/node-hl7-client_hl7..parser.test_L30.hl7", "AE", "MSH-10 message control id is empty: a resend "],
  ["corpus/odd/node-hl7-client_hl7..parser.test_L8.hl7", "AE", "no ORC/OBR order in the message"],
  ["corpus/odd/node-hl7-client_hl7.build.test_L446.hl7", "AE", "ADT^A01 without a PID segment"],
  ["corpus/odd/node-hl7-client_hl7.build.test_L454.hl7", "AE", "ADT^A01 without a PID segment"],
  ["corpus/odd/node-hl7-client_hl7.sanity.test_L265.hl7", "AE", "PID segment missing: the results cannot be fi"],
  ["fhir-converter/ORU-R01-01.hl7", "CE", "OBX-2 RP attachment before any OBR: no report"],
  ["fhir-converter/OUL-R22-01.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["fhir-converter/OUL-R22-02.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["fhir-converter/OUL-R23-01.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["fhir-converter/OUL-R23-02.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["fhir-converter/OUL-R24-01.hl7", "AE", "OBX-3 observation identifier is empty"],
  ["fhir-converter/OUL-R24-02.hl7", "AE", "OBX-3 observation identifier is empty"],
];

const runs = DB_KINDS.flatMap((kind) => dataSets().map((set) => ({ kind, set })));

describe.each(runs)('HL7 v2 messages of the $set.name over MLLP ($kind)', ({ kind, set }) => {
  let h: Harness;
  let client: MllpClient;
  beforeAll(async () => {
    h = await startHarness(kind);
    client = await MllpClient.connect(h.listener.port);
  }, 60_000);
  afterAll(async () => {
    client?.end();
    await h?.close();
  });

  it('answers every message with AA/CA or the expected negative ACK naming the defect', async () => {
    const files = corpusFiles(set.root);
    expect(files.length).toBeGreaterThan(set.name === 'shared corpus' ? 200 : 20);
    // The listed defects of the files this run has (the fixtures hold some of them).
    const negative = NEGATIVE.filter(([name]) => files.some((f) => f.name === name));
    const expected = new Map(negative.map(([f, code, text]) => [f, { code, text }]));
    const got: Array<[string, string, string]> = [];
    for (const f of files) {
      const ack = Hl7v2Message.parse(await client.request(readFileSync(f.path)));
      const msa = ack.first('MSA')!;
      const code = msa.get(1);
      const err = ack.first('ERR');
      const text = err ? err.get(8) || err.get(1, 4, 2) : '';
      // The ACK echoes MSH-10 and swaps sender and receiver.
      const sent = Hl7v2Message.parse(readFileSync(f.path, 'utf8').replace(/^\uFEFF/, '').split(/\r\n|\r|\n/).filter(Boolean).join('\r'));
      expect(msa.get(2), f.name).toBe(sent.controlId);
      expect(ack.msh.raw(5), f.name).toBe(sent.msh.raw(3));
      expect(ack.msh.raw(3), f.name).toBe(sent.msh.raw(5));
      if (code === 'AA' || code === 'CA') {
        expect(expected.has(f.name), `${f.name} was expected to fail: ${expected.get(f.name)?.text}`).toBe(false);
        expect(err, f.name).toBeUndefined();
      } else {
        got.push([f.name, code, text]);
      }
    }
    expect(got.map(([f, c, t]) => [f, c, t.slice(0, 45)])).toEqual(negative);
  }, 60_000);
});
